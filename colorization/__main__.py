from colorization.cli import app

app(prog_name="colorization")
