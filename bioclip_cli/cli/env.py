"""`bioclip env`: versions, devices, threads, caches and folders, for a bug report."""

from __future__ import annotations

from bioclip_cli.cli.options import FormatOpt, OutputOpt, examples

EXAMPLES = examples(
    "bioclip env",
    "bioclip env --format json > env.json",
    "bioclip env --format json | jq .torch",
)


def command(format: FormatOpt = "table", output_file: OutputOpt = None) -> None:
    """What a bug report needs: bioscan-clip, Python, torch (+ CUDA build and availability), transformers, peft,
    accelerate, faiss (+ GPU support), h5py and numpy versions; the devices torch sees; thread counts; the
    Hugging Face cache and offline flags; the default data, checkpoint and run folders. Works offline.
    """
    from bioclip_cli.cli import output
    from bioclip_cli.workflows.environment import environment_report, environment_rows

    report = environment_report()
    if output.emit(environment_rows(report), format, output_file, title="bioclip env", json_obj=report):
        output.hint("paste this table (or `bioclip env --format json`) into your bug report")
