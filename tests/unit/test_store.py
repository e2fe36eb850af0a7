"""colorization.store: the processed store's pairs, histograms, split and row files."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from colorization.acquire import run_acquire
from colorization.config import load_params
from colorization.histogram import color_histogram
from colorization.images import read_rgb
from colorization.lineart import canny, resize_square
from colorization.preprocess import build_preprocess
from colorization.store import ProcessedStore, npy_rows, read_histograms, split_of


@pytest.fixture
def built(tmp_path, small_params):
    params = load_params(small_params)
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    return params


def test_stored_histogram_equals_one_computed_from_the_raw_image(tmp_path, built):
    ids, hists = read_histograms(tmp_path / "processed/histograms.parquet")
    manifest = pq.read_table(tmp_path / "raw/manifest.parquet").to_pylist()
    assert ids == sorted(r["id"] for r in manifest)
    schema = pq.read_schema(tmp_path / "processed/histograms.parquet")
    assert str(schema.field("histogram").type) == "fixed_size_list<element: float>[512]"
    for k, row in enumerate(sorted(manifest, key=lambda r: r["id"])):
        rgb = read_rgb(tmp_path / "raw" / row["path"])
        r, g, b = (rgb[..., c].astype(np.int64) >> 5 for c in range(3))
        expected = np.bincount((r * 64 + g * 8 + b).ravel(), minlength=512) / rgb.shape[0] / rgb.shape[1]
        np.testing.assert_allclose(hists[k], expected, atol=1e-6)


def test_store_holds_resized_pairs_and_a_recorded_split(tmp_path, built):
    store = ProcessedStore(tmp_path / "processed/lineart", tmp_path / "processed/histograms.parquet")
    total = sum(store.meta["splits"].values())
    assert total == 24 and store.image_size == 32
    train = store.load("train")
    assert train.color.shape == (len(train), 32, 32, 3) and train.color.dtype == np.uint8
    assert train.lineart.shape == (len(train), 32, 32) and train.hint.shape == (len(train), 512)
    for k, image_id in enumerate(train.ids):
        assert split_of(image_id, 0.1, 0.1) == "train"
        rgb = read_rgb(tmp_path / f"raw/images/{image_id}.png")
        color = resize_square(rgb, 32, "center_crop")
        np.testing.assert_array_equal(train.color[k], color)
        np.testing.assert_array_equal(train.lineart[k], canny(color, 100, 200, 3))
        np.testing.assert_allclose(train.hint[k], color_histogram(rgb), atol=1e-6)
    assert not (tmp_path / "processed/.lineart.partial").exists()


def test_split_is_stable_and_roughly_proportional():
    ids = [f"img-{i}" for i in range(5000)]
    splits = [split_of(i, 0.1, 0.2) for i in ids]
    assert splits == [split_of(i, 0.1, 0.2) for i in ids]
    assert abs(splits.count("test") / 5000 - 0.2) < 0.03
    assert abs(splits.count("val") / 5000 - 0.1) < 0.03


def test_rows_written_one_at_a_time_make_the_file_np_save_makes(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "saved.npy", rows)
    with npy_rows(tmp_path / "streamed.npy", rows.shape) as add:
        for row in rows:
            add(np.asfortranarray(row))  # not C-contiguous: written in C order all the same
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()


@pytest.mark.parametrize("rows", [2, 4])
def test_a_file_of_rows_is_published_only_with_every_row(tmp_path, rows):
    with pytest.raises(ValueError, match="rows"), npy_rows(tmp_path / "part.npy", (3, 2)) as add:
        for _ in range(rows):
            add(np.zeros(2, np.uint8))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_a_row_of_the_wrong_shape_is_refused(tmp_path):
    refusal = r"row uint8 \(3,\), expected uint8 \(2,\)"
    with pytest.raises(ValueError, match=refusal), npy_rows(tmp_path / "part.npy", (1, 2)) as add:
        add(np.zeros(3, np.uint8))
    assert list(tmp_path.iterdir()) == []
