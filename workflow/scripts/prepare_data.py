from pathlib import Path

from adapter import run

from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.readers import read_interactions
from ract.data.sources import fetch_dataset


def main():
    p = snakemake.params
    path, fmt = fetch_dataset(p.source, p.cache, offline=bool(p.offline))
    frame = read_interactions(path, fmt)
    prepare_split(frame, PrepareConfig(**p.settings), Path(snakemake.output.manifest).parent,
                  source=str(path), extra={"format": fmt, "dataset": snakemake.wildcards.dataset})


run(snakemake, main)
