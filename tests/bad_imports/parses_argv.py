"""A backend module that reads the command line when imported (argparse exits on it)."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--database", required=True)
options = parser.parse_args()
