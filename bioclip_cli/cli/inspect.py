"""`bioclip inspect`: summarise a dataset or embedding HDF5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bioclip_cli.cli.options import FormatOpt, JsonOpt, OutputOpt, examples

EXAMPLES = examples(
    "bioclip inspect data/BIOSCAN_5M/BIOSCAN_5M.hdf5",
    "bioclip inspect runs/demo/embeddings/extracted_feature_from_val_split.hdf5 --json summary.json",
    "bioclip inspect data/BIOSCAN_5M/BIOSCAN_5M.hdf5 --format csv --output groups.csv",
)
NO_ARGS_IS_HELP = True

_DATASET_COLUMNS = (
    "group",
    "rows",
    "species",
    "genera",
    "jpeg_min",
    "jpeg_mean",
    "jpeg_max",
    "barcode_min",
    "barcode_median",
    "barcode_max",
    "language_tokens",
)
_EMBEDDING_COLUMNS = ("group", "dataset", "shape", "dtype", "norm_min", "norm_mean", "norm_max", "nan")


def command(
    file: Annotated[Path, typer.Argument(help="A dataset HDF5 or an extracted-embedding HDF5.")],
    json_out: JsonOpt = None,
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Groups, row counts, species/genus counts, JPEG and barcode stats, seen/unseen checks; or embedding shapes and norms.

    --format json prints the whole summary (groups, checks, warnings); --format csv the per-group rows.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.inspect import inspect_file

    output.check_outputs(json_out, output_file)
    summary = inspect_file(file)
    columns = _DATASET_COLUMNS if summary["kind"] == "dataset" else _EMBEDDING_COLUMNS
    as_table = output.emit(
        summary["groups"], format, output_file, title=f"{file} ({summary['kind']})", columns=columns, json_obj=summary
    )
    if summary["checks"] and as_table:
        output.print_table(summary["checks"], title="checks", columns=("check", "where", "status", "detail"))
    for message in summary["warnings"]:
        output.warning(message)
    if json_out:
        output.write_json(json_out, summary)
        output.info(f"wrote {json_out}")
