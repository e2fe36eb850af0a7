"""A bad params file stops the CLI (a child process) before any work."""

import subprocess
import sys

import yaml


def test_cli_stops_before_any_work(tmp_path, small_params):
    data = yaml.safe_load(small_params.read_text())
    data["acquire"]["synthetic"]["count"] = -5
    small_params.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "colorization", "acquire", "--params", str(small_params)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {small_params}: acquire.synthetic.count: Input should be greater than 0 (got -5)"
    ]
    assert not (tmp_path / "raw").exists()
