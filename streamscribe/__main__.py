"""`python -m streamscribe`: the same command line as the `streamscribe` script."""

from streamscribe.cli import app

if __name__ == "__main__":
    app(prog_name="streamscribe")
