"""`bioclip presets`: list the presets, or print one fully resolved."""

from __future__ import annotations

from typing import Annotated

import typer

from bioclip_cli.cli.options import ConfigOpt, FormatOpt, JsonOpt, OutputOpt, SetOpt, examples

EXAMPLES = examples(
    "bioclip presets",
    "bioclip presets idt-5m",
    "bioclip presets idt-5m --set train.batch_size=128",
    "bioclip presets idt-5m --params",
    "bioclip presets --format json",
)


def command(
    name: Annotated[
        str | None, typer.Argument(help="A preset name or YAML file to resolve.", show_default=False)
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    params: Annotated[
        bool, typer.Option("--params", help="Build the model with random weights and count its parameters.")
    ] = False,
    json_out: JsonOpt = None,
    format: FormatOpt = "table",
    output_file: OutputOpt = None,
) -> None:
    """Without NAME: the presets with a one-line description. With NAME: the resolved configuration as YAML
    (as JSON with --format json)."""
    from bioclip_cli.cli import output
    from bioclip_cli.config import load_config, preset_description, preset_names, to_dict, to_yaml
    from bioclip_cli.errors import BioclipError

    if name is None:
        rows = []
        for preset in preset_names():
            cfg = load_config(preset)
            rows.append(
                {
                    "preset": preset,
                    "data": cfg.data.dataset,
                    "modalities": "+".join(m[0].upper() if m != "dna" else "D" for m in cfg.model.modalities)
                    if cfg.train.enabled
                    else "none",
                    "epochs": cfg.train.epochs if cfg.train.enabled else None,
                    "batch": cfg.train.batch_size if cfg.train.enabled else None,
                    "description": preset_description(preset),
                }
            )
        if output.emit(rows, format, output_file, title="bioclip presets"):
            output.hint("bioclip presets NAME  (the resolved configuration)")
        if json_out:
            output.write_json(json_out, rows)
        return

    cfg = load_config(name, config or [], set_ or [])
    if params:
        from bioclip_cli.models.summary import parameter_rows

        rows = parameter_rows(cfg.model)
        shown = [{k: f"{v:,}" if isinstance(v, int) else v for k, v in row.items()} for row in rows]
        output.emit(
            rows, format, output_file, title=f"{cfg.name}: parameters (random weights, no download)", table_rows=shown
        )
        if json_out:
            output.write_json(json_out, rows)
        return
    if format == "csv":
        raise BioclipError(
            "a resolved configuration is not a table: --format csv does not apply",
            f"bioclip presets {name} --format json",
        )
    if format == "json" or (output_file is not None and output_file.suffix.lower() == ".json"):
        output.emit([], "json", output_file, json_obj=to_dict(cfg))
    elif output_file is not None:
        from bioclip_cli.atomic_write import write_text

        output.info(f"wrote {write_text(output_file, to_yaml(cfg))}")
    else:
        output.console.print(to_yaml(cfg), end="", markup=False, highlight=False)
    if json_out:
        output.write_json(json_out, to_dict(cfg))
