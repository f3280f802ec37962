"""Widgets generated from the settings declaration (trainer/settings.py): the train node shows the basic settings,
the advanced-settings node the rest, each with a 'from the preset' value."""
from comfy_api.latest import io

from ..trainer.settings import declared

FROM_PRESET = "preset"       # combos and on/off settings of the advanced node
FROM_PRESET_NUMBER = -1      # numbers of the advanced node (every declared number is >= 0)
_BY_NAME = {name: (typ, default, meta) for name, typ, default, meta in declared()}


def _tooltip(meta, extra=""):
    tip = meta["help"]
    if meta["only"]:
        tip += f" Used with {meta['only']} only." if meta["only"].startswith("sigma") else f" Affects {meta['only']} only."
    return tip + extra


def _float_kwargs(meta):
    step = meta["step"] or 0.01
    return {"step": step, "round": step / 10 if step < 1e-3 else step}


def setting_input(name, from_preset=False, default=None):
    """The widget for one declared setting; ``from_preset`` adds the 'use the preset's value' choice and makes the input
    optional (a workflow saved before a setting existed still loads and runs: the missing setting follows the preset).
    ``default``: another starting value than the declared one (a node whose task wants other values, e.g. sliders)."""
    typ, declared_default, meta = _BY_NAME[name]
    default = declared_default if default is None else default
    opt = {"optional": True} if from_preset else {}
    if meta["choices"] is not None or typ is bool:
        options = list(meta["choices"]) if meta["choices"] is not None else ["on", "off"]
        if not from_preset:
            if typ is bool:
                return io.Boolean.Input(name, default=default, tooltip=_tooltip(meta))
            return io.Combo.Input(name, options=options, default=default, tooltip=_tooltip(meta))
        return io.Combo.Input(name, options=[FROM_PRESET, *options], default=FROM_PRESET,
                              tooltip=_tooltip(meta, " 'preset': the preset's value."), **opt)
    if typ is str:
        return io.String.Input(name, default="" if from_preset else default,
                               tooltip=_tooltip(meta, " Empty: the preset's value." if from_preset else ""), **opt)
    low = FROM_PRESET_NUMBER if from_preset else meta["min"]
    value = FROM_PRESET_NUMBER if from_preset else default
    extra = " -1: the preset's value." if from_preset else ""
    if typ is int:
        return io.Int.Input(name, default=value, min=low, max=meta["max"], tooltip=_tooltip(meta, extra), **opt)
    return io.Float.Input(name, default=value, min=low, max=meta["max"], tooltip=_tooltip(meta, extra),
                          **_float_kwargs(meta), **opt)


def overrides_from_widgets(values: dict) -> dict:
    """The advanced node's widget values -> the settings it changes (those not left at 'preset')."""
    out = {}
    for name, value in values.items():
        typ = _BY_NAME[name][0]
        if value in (FROM_PRESET, "") or (typ in (int, float) and value == FROM_PRESET_NUMBER):
            continue
        out[name] = (value == "on") if typ is bool else typ(value)
    return out
