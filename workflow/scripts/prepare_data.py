from pathlib import Path

import json

from adapter import run

from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.readers import read_interactions
from ract.data.sources import check_cached


def main():
    p = snakemake.params
    reader = dict(p.reader)
    raw = snakemake.input.raw
    if not reader["format"]:  # a known data set: obtain_data wrote a pointer to the raw file
        pointer = json.load(open(raw))
        raw, reader["format"] = pointer["path"], pointer["format"]
        check_cached(raw, f"delete it and {snakemake.input.raw}; the next run fetches it again")
    else:
        check_cached(raw)  # a file of the user's, unless it has a .sha256 beside it
    cfg = PrepareConfig(**p.settings)
    frame = read_interactions(
        raw,
        reader["format"],
        columns=reader["columns"],
        sep=reader["sep"],
        header=reader["header"],
    )
    prepare_split(
        frame,
        cfg,
        Path(snakemake.output.manifest).parent,
        source=str(raw),
        extra={"format": reader["format"], "dataset": snakemake.wildcards.dataset},
    )


run(snakemake, main)
