from adapter import run

from ract.data.sources import fetch_dataset
from ract.io import write_json


def main():
    p = snakemake.params
    if p.source == "synthetic":
        # here only: the generator needs numpy and pandas, a known data set neither (a job's
        # start is most of its time)
        from ract.data.synthetic import synthesize

        path, fmt = synthesize(p.cache, **p.synthetic)
    else:
        path, fmt = fetch_dataset(p.source, p.cache, offline=bool(p.offline))
    # A pointer, not a copy: the raw file stays in the download cache.
    write_json(snakemake.output.pointer, {"dataset": p.source, "path": str(path), "format": fmt})


run(snakemake, main)
