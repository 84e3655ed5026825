"""Property-based checks at the edge: generated TOML documents and `nst image` / `nst run` options.

Valid documents load with the values they hold. Every invalid value ends in a ConfigError (from
``config.load``) or exit code 1 or 2 (from the CLI) with one error naming the key or option, never
a traceback, and before any work: no output folder, no run ledger, a quick return. The CLI cases
use real photo and style files, so a value that slipped through validation would start real work.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline import config
from pipeline.cli import app
from pipeline.errors import ConfigError
from tests.conftest import write_png

# Example counts, kept moderate so that the whole file runs in well under a minute on two cores.
# The invalid-document and CLI properties run once per fault kind or option, so each is covered.
EXAMPLES = {"valid_documents": 150, "invalid_documents": 25, "memory_sizes": 300,
            "image_options": 6, "run_options": 6}
COUNTS: Counter = Counter()
QUICK_SECONDS = 5.0  # loading VGG alone takes longer; validation takes milliseconds


def examples(name: str) -> Any:
    return settings(max_examples=EXAMPLES[name], deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """Prints how many examples each property ran (also with -q)."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and COUNTS:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            reporter.write("\n")
            reporter.write_line("hypothesis examples run: "
                                + ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items())))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("properties")
    rng = np.random.default_rng(0)
    write_png(folder / "photo.png", rng.uniform(0, 255, (24, 32, 3)))
    write_png(folder / "style.png", rng.uniform(0, 255, (32, 32, 3)))
    write_png(folder / "start.png", rng.uniform(0, 255, (24, 32, 3)))
    return folder


# ---------------------------------------------------------------- TOML documents

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):  # JSON's escapes are TOML's (control characters are not generated)
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(doc: dict) -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for section, values in doc.items():
        if isinstance(values, dict):
            lines.append(f"[{json.dumps(section)}]")
            lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


DEFAULTS = config.read_toml(config.DEFAULT_CONFIG)
KEYS = [(section, name) for section, keys in config.SCHEMA.items() for name in keys]
LAYER_PAIRS = {"content_layers": "content_layer_weights", "style_layers": "style_layer_weights"}
LAYER_KEYS = {*LAYER_PAIRS, *LAYER_PAIRS.values()}
VGG19_LAYERS = {name for name, _, _ in config.conv_layers("vgg19")}
# Valid for both networks, in Keras and in the paper's names.
SHARED_LAYERS = sorted({name for name, _, _ in config.conv_layers("vgg16")}
                       | {f"conv{b}_{c}" for b, c in ((1, 1), (2, 1), (3, 1), (4, 2), (5, 1))}
                       | {"relu4_2"})
MEMORY_UNITS = ["", "B", "K", "KB", "M", "MB", "G", "GB", "T", "TB"]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=12)
words = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
tables = st.dictionaries(words, st.integers(), max_size=2)


def number_range(rule: dict, typ: type) -> tuple[float, float]:
    lo = rule["lo"] if rule["lo"] is not None else (0 if rule["positive"] else -1e9)
    hi = rule["hi"] if rule["hi"] is not None else (config.INT64[1] if typ is int else 1e12)
    return lo, hi


def valid_value(section: str, name: str, workdir: Path) -> st.SearchStrategy:
    key = f"{section}.{name}"
    typ, rule = config.SCHEMA[section][name]
    if key == "optim.init":
        return st.sampled_from(["content", "noise", str(workdir / "start.png")])
    if key == "image.max_memory":
        return memory_text()
    if key == "image.scales":
        return st.lists(st.floats(0.01, 1.0), max_size=3).map(lambda xs: [*sorted(xs), 1.0])
    if rule["choices"]:
        return st.sampled_from(rule["choices"])
    if typ is bool:
        return st.booleans()
    lo, hi = number_range(rule, typ)
    if typ is int:
        ints = st.integers(int(lo), int(hi))
        return st.one_of(ints, st.integers(int(lo), int(min(hi, 2**53))).map(float))  # 512.0 means 512
    floats = st.floats(lo, hi, exclude_min=rule["positive"], allow_nan=False, allow_infinity=False)
    return st.one_of(floats, st.integers(math.ceil(lo) or int(rule["positive"]), int(min(hi, 2**53))))


@st.composite
def memory_text(draw) -> str:
    if draw(st.booleans()):
        return ""
    number = draw(st.one_of(st.integers(1, 10**6).map(str), st.decimals(1, 10**4, places=2).map(str)))
    unit = draw(st.sampled_from(MEMORY_UNITS))
    unit = draw(st.sampled_from([unit, unit.lower()]))
    return draw(st.sampled_from(["", " "])) + number + draw(st.sampled_from(["", " "])) + unit


@st.composite
def layer_pair(draw, layers_key: str) -> dict:
    layers = draw(st.lists(st.sampled_from(SHARED_LAYERS), min_size=1, max_size=5))
    weights = draw(st.lists(st.floats(0, 1e3), min_size=len(layers), max_size=len(layers)))
    return {layers_key: layers, LAYER_PAIRS[layers_key]: weights}


@st.composite
def valid_document(draw, workdir: Path) -> dict:
    doc: dict = {}
    for section, keys in config.SCHEMA.items():
        if not draw(st.booleans()):
            continue
        values = doc.setdefault(section, {})
        for name in draw(st.lists(st.sampled_from(sorted(keys)), unique=True, max_size=5)):
            if name in LAYER_PAIRS:
                values.update(draw(layer_pair(name)))
            elif name not in LAYER_KEYS:
                values[name] = draw(valid_value(section, name, workdir))
    return doc


def wrong_type(typ: Any) -> st.SearchStrategy:
    if typ is bool:
        return st.one_of(st.integers(), finite, text, st.lists(st.booleans(), max_size=2), tables)
    if typ is int:
        return st.one_of(text, st.booleans(), finite.filter(lambda x: not x.is_integer()), non_finite,
                         st.lists(st.integers(), max_size=2), tables, st.integers(2**63, 2**70))
    if typ is float:
        return st.one_of(text, st.booleans(), non_finite, st.lists(finite, max_size=2), tables)
    if typ is str:
        return st.one_of(st.integers(), finite, st.booleans(), st.lists(text, max_size=2), tables)
    item = typ.__args__[0]  # list[str] or list[float]: not a list, or a list with a wrong item
    wrong_item = st.one_of(st.integers(), finite, st.booleans()) if item is str else st.one_of(
        text, st.booleans(), non_finite, st.lists(finite, min_size=1, max_size=1))
    return st.one_of(st.integers(), text, st.booleans(), tables,
                     st.tuples(st.lists(finite.map(abs), max_size=2), wrong_item).map(lambda t: [*t[0], t[1]]))


def effective(doc: dict, section: str, name: str) -> Any:
    values = doc.get(section)
    return values[name] if isinstance(values, dict) and name in values else DEFAULTS[section][name]


BOUNDED = [(s, n) for s, n in KEYS if config.SCHEMA[s][n][0] in (int, float) and (
    config.SCHEMA[s][n][1]["lo"] is not None or config.SCHEMA[s][n][1]["hi"] is not None
    or config.SCHEMA[s][n][1]["positive"])]
FLOAT_KEYS = [(s, n) for s, n in KEYS if config.SCHEMA[s][n][0] is float]
CHOICE_KEYS = [(s, n) for s, n in KEYS if config.SCHEMA[s][n][1]["choices"]]


def out_of_range(section: str, name: str) -> st.SearchStrategy:
    typ, rule = config.SCHEMA[section][name]
    below = rule["lo"] if rule["lo"] is not None else (0 if rule["positive"] else None)
    options = []
    if below is not None:
        options.append(st.integers(config.INT64[0], math.ceil(below) - 1) if typ is int else
                       st.floats(max_value=below, exclude_max=not rule["positive"], allow_nan=False,
                                 allow_infinity=False))
    if rule["hi"] is not None:
        options.append(st.integers(int(rule["hi"]) + 1, config.INT64[1]) if typ is int else
                       st.floats(min_value=rule["hi"], exclude_min=True, allow_nan=False, allow_infinity=False))
    return st.one_of(*options)


def bad_scales(scales: list) -> bool:
    return not scales or any(not 0 < s <= 1 for s in scales) or scales != sorted(scales) or scales[-1] != 1


@st.composite
def memory_junk(draw) -> str:
    return draw(st.one_of(
        st.sampled_from(["8 parsecs", "0GB", "-1GB", ".", "GB", "1.2.3MB", "nan", "inf", " ", "1e3MB", "0.1B"]),
        st.tuples(st.integers(1, 999), st.from_regex(r"[A-Za-z]{1,6}", fullmatch=True)
                  .filter(lambda u: u.upper() not in MEMORY_UNITS)).map(lambda t: f"{t[0]}{t[1]}"),
        text.filter(lambda t: any(c not in "0123456789. \tKMGTBkmgtb" for c in t)),
    ))


FAULTS = ("unknown section", "unknown key", "not a table", "wrong type", "out of range", "not finite",
          "not a choice", "bad layers", "bad weights", "bad scales", "bad memory", "bad init")


@st.composite
def invalid_document(draw, workdir: Path, fault: str | None = None) -> tuple[dict, str, str]:
    """A valid document with one fault: (document, fault, the key the error must name)."""
    doc = draw(valid_document(workdir))
    fault = fault or draw(st.sampled_from(FAULTS))
    if fault == "unknown section":
        name = draw(words.filter(lambda n: n not in config.SCHEMA))
        doc[name] = draw(st.one_of(tables, st.integers()))
        return doc, fault, f"[{name}]"
    if fault == "not a table":
        section = draw(st.sampled_from(sorted(config.SCHEMA)))
        doc[section] = draw(st.one_of(st.integers(), text, st.lists(st.integers(), max_size=2)))
        return doc, fault, f"[{section}]"
    if fault == "unknown key":
        section = draw(st.sampled_from(sorted(config.SCHEMA)))
        name = draw(words.filter(lambda n: n not in config.SCHEMA[section]))
        doc.setdefault(section, {})[name] = draw(st.one_of(st.integers(), text, st.booleans()))
        return doc, fault, f"{section}.{name}"
    if fault == "bad layers":
        section, name = "model", draw(st.sampled_from(sorted(LAYER_PAIRS)))
        unknown = words.filter(lambda n: config.canonical_layer(n) not in VGG19_LAYERS)
        value = draw(st.one_of(st.just([]), st.lists(unknown, min_size=1, max_size=3)))
    elif fault == "bad weights":
        section, layers = "model", draw(st.sampled_from(sorted(LAYER_PAIRS)))
        name, count = LAYER_PAIRS[layers], len(effective(doc, "model", layers))
        value = draw(st.one_of(
            st.lists(st.floats(0, 1), max_size=6).filter(lambda w: len(w) != count),
            st.tuples(st.lists(st.floats(0, 1), min_size=count - 1, max_size=count - 1),
                      st.floats(max_value=0, exclude_max=True, allow_nan=False, allow_infinity=False))
            .map(lambda t: [*t[0], t[1]]),
        ))
    elif fault == "bad scales":
        section, name = "image", "scales"
        value = draw(st.lists(st.floats(-2, 2, allow_nan=False), max_size=4).filter(bad_scales))
    elif fault == "bad memory":
        section, name = "image", "max_memory"
        value = draw(memory_junk())
    elif fault == "bad init":
        section, name = "optim", "init"
        value = draw(st.one_of(st.sampled_from(["", "Content", "NOISE", str(workdir)]),
                               words.map(lambda n: str(workdir / f"missing_{n}.png"))))
    elif fault == "wrong type":
        section, name = draw(st.sampled_from(KEYS))
        value = draw(wrong_type(config.SCHEMA[section][name][0]).filter(
            # true/false still mean luminance/off there, as before the key had modes
            lambda v: not ((section, name) == ("image", "preserve_colors") and isinstance(v, bool))))
    elif fault == "out of range":
        section, name = draw(st.sampled_from(BOUNDED))
        value = draw(out_of_range(section, name))
    elif fault == "not finite":
        section, name = draw(st.sampled_from(FLOAT_KEYS))
        value = draw(non_finite)
    else:  # not a choice
        section, name = draw(st.sampled_from(CHOICE_KEYS))
        value = draw(text.filter(lambda v: v not in config.SCHEMA[section][name][1]["choices"]))
    if not isinstance(doc.get(section), dict):
        doc[section] = {}
    doc[section][name] = value
    return doc, fault, f"{section}.{name}"


def write_document(workdir: Path, doc: dict, name: str = "doc.toml") -> Path:
    path = workdir / name
    path.write_text(toml_document(doc), encoding="utf-8")
    return path


@given(data=st.data())
@examples("valid_documents")
def test_valid_documents_load_with_their_values(workdir, data):
    doc = data.draw(valid_document(workdir))
    loaded = config.load(write_document(workdir, doc)).to_dict()
    for section, values in doc.items():
        for name, value in values.items():
            assert loaded[section][name] == value, (section, name)
    COUNTS["valid_documents"] += 1


@pytest.mark.parametrize("fault", FAULTS)
@given(data=st.data())
@examples("invalid_documents")
def test_invalid_documents_are_one_config_error_naming_the_key_and_file(workdir, fault, data):
    doc, fault, key = data.draw(invalid_document(workdir, fault))
    path = write_document(workdir, doc)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert key in message and str(path) in message, (fault, message)
    COUNTS["invalid_documents"] += 1


@given(st.one_of(memory_text(), memory_junk(), text))
@examples("memory_sizes")
def test_memory_sizes_accepted_at_load_parse_the_same_in_tiling(value):
    """config.memory_bytes (checked at load) never accepts what tiling.parse_memory would read otherwise."""
    from pipeline.core.tiling import parse_memory

    COUNTS["memory_sizes"] += 1
    try:
        accepted = config.memory_bytes(value)
    except ValueError:
        return
    assert parse_memory(value) == accepted


# ---------------------------------------------------------------- the CLI at the edge

OPTION_KEYS = {"--size": "image.size", "--iterations": "optim.iterations", "--scales": "image.scales",
               "--optimizer": "optim.optimizer", "--content-loss-weight": "loss.content_weight",
               "--style-loss-weight": "loss.style_weight", "--tv-weight": "loss.tv_weight",
               "--init": "optim.init", "--pooling": "model.pooling", "--style-scale": "image.style_scale",
               "--precision": "optim.precision", "--format": "image.format", "--max-memory": "image.max_memory",
               "--preserve-colors": "image.preserve_colors"}
# If validation ever let a case through, these keep the work it starts small.
BASELINE = {"--size": "32", "--iterations": "1", "--scales": "1"}
not_a_number = st.sampled_from(["abc", "", "1,5", "0x10", "one"])
not_an_int = st.one_of(not_a_number, st.sampled_from(["1.5", "nan", "1e3"]))


def bad_float(lo: float | None = None, hi: float | None = None) -> st.SearchStrategy:
    options = [not_a_number, st.sampled_from(["nan", "inf", "-inf"])]
    if lo is not None:
        options.append(st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False).map(repr))
    if hi is not None:
        options.append(st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False).map(repr))
    return st.one_of(*options)


def not_in(choices: tuple) -> st.SearchStrategy:
    return text.filter(lambda v: v not in choices)


def valid_options(workdir: Path, command: str) -> dict[str, st.SearchStrategy]:
    options = {
        "--optimizer": st.sampled_from(["lbfgs", "adam"]), "--content-loss-weight": st.floats(0, 100).map(repr),
        "--style-loss-weight": st.floats(0, 100).map(repr), "--tv-weight": st.floats(0, 100).map(repr),
        "--init": st.sampled_from(["content", "noise", str(workdir / "start.png")]),
        "--pooling": st.sampled_from(["max", "avg"]), "--style-scale": st.floats(0.05, 8).map(repr),
        "--precision": st.sampled_from(["auto", "fp32"]), "--format": st.sampled_from(["auto", "png", "jpeg"]),
        "--preset": st.sampled_from([name for name, _, _ in config.list_presets()]),
        "--style-weight": st.floats(0.1, 2).map(repr),
        "--preserve-colors": st.sampled_from(["off", "luminance", "histogram"]), "--no-keep-resolution": st.just(None),
    }
    if command == "image":
        options["--max-memory"] = st.sampled_from(["", "8GB", "512 MB"])
    else:
        options["--workers"] = st.integers(1, 4).map(str)
        options["--gpus-per-worker"] = st.sampled_from(["0", "0.5", "1"])
    return options


COMMON_FLAGS = ["--size", "--iterations", "--optimizer", "--content-loss-weight", "--style-loss-weight", "--tv-weight",
                "--init", "--pooling", "--style-scale", "--scales", "--precision", "--format", "--config", "--preset",
                "--style-weight", "--preserve-colors"]
FLAGS = {"image": [*COMMON_FLAGS, "--max-memory"], "run": [*COMMON_FLAGS, "--workers", "--gpus-per-worker"]}


@st.composite
def bad_option(draw, workdir: Path, flag: str) -> tuple[list[str], tuple[str, ...], str | None]:
    """(arguments, names of which the error must show one, the config key it concerns)."""
    if flag == "--config":
        if draw(st.integers(0, 9)) == 0:
            missing = workdir / "absent.toml"
            return [f"--config={missing}"], (str(missing),), None
        doc, _fault, key = draw(invalid_document(workdir))
        path = write_document(workdir, doc, "cli.toml")
        return [f"--config={path}"], (key,), key
    if flag == "--preset":
        name = draw(words.filter(lambda n: not any((d / f"{n}.toml").is_file() for d in config.PRESET_DIRS)))
        return [f"--preset={name}"], ("preset",), None
    if flag == "--style-weight":
        # Not "nan": check_style_weights lets it through (test_style_weight_nan_is_refused_first below).
        values = draw(st.one_of(st.lists(st.floats(0.1, 1).map(repr), min_size=2, max_size=3),
                                st.floats(max_value=0, allow_nan=False, allow_infinity=False).map(lambda w: [repr(w)]),
                                not_a_number.map(lambda w: [w])))
        return [f"--style-weight={w}" for w in values], ("--style-weight",), None
    value = draw({
        "--size": st.one_of(st.integers(max_value=31), st.integers(min_value=20001), not_an_int).map(str),
        "--iterations": st.one_of(st.integers(max_value=0), st.integers(min_value=100001), not_an_int).map(str),
        "--optimizer": not_in(("lbfgs", "adam")), "--pooling": not_in(("max", "avg")),
        "--precision": not_in(("auto", "fp32", "bf16", "fp16")),
        "--format": not_in(("auto", "png", "jpeg", "webp", "tiff", "png16", "tiff16")),
        "--preserve-colors": not_in(("off", "luminance", "histogram")),
        "--content-loss-weight": bad_float(lo=0.0), "--style-loss-weight": bad_float(lo=0.0),
        "--tv-weight": bad_float(lo=0.0), "--style-scale": bad_float(lo=0.05, hi=8.0),
        "--init": st.one_of(st.sampled_from(["", "Content", str(workdir)]),
                           words.map(lambda n: str(workdir / f"missing_{n}"))),
        "--scales": st.one_of(st.lists(st.floats(-2, 2, allow_nan=False), max_size=4).filter(bad_scales)
                              .map(lambda xs: ",".join(map(repr, xs))),
                              st.sampled_from(["a,b", "0.5,x", "nan,1", "1,inf", ",", "1;2"])),
        "--max-memory": memory_junk(),
        "--workers": st.one_of(st.integers(max_value=0).map(str), not_an_int),
        "--gpus-per-worker": st.one_of(st.floats(max_value=0, exclude_max=True, allow_nan=False,
                                                 allow_infinity=False).map(repr), not_a_number, st.just("nan")),
    }[flag])
    return [f"{flag}={value}"], (flag, *([OPTION_KEYS[flag]] if flag in OPTION_KEYS else [])), OPTION_KEYS.get(flag)


def error_messages(output: str) -> tuple[list[str], list[str]]:
    """(error messages, other lines): click's "Error: ..." lines and rich error boxes (joined)."""
    messages, others, box = [], [], None
    for line in output.splitlines():
        if line.startswith("╭─ Error"):
            box = []
        elif box is not None and line.startswith("╰"):
            messages.append(" ".join(box))
            box = None
        elif box is not None:
            box.append(line.strip("│ "))
        elif line.lower().startswith("error:"):
            messages.append(line)
        elif line.strip() and not line.startswith(("Usage: ", "Try ")):
            others.append(line)
    return messages, others


runner = CliRunner()


@pytest.fixture(scope="module")
def cli_ready(workdir):
    """One refused call per command first, so that the timing below leaves out module imports."""
    for command in ("image", "run"):
        runner.invoke(app, [command, str(workdir / "photo.png"), "-s", str(workdir / "style.png"),
                            "-o", str(workdir / "out"), "--size=1"])
    assert not (workdir / "out").exists()


def check_refused(workdir: Path, command: str, args: list[str], names: tuple[str, ...]) -> None:
    out = workdir / "out"
    started = time.monotonic()
    result = runner.invoke(app, [command, str(workdir / "photo.png"), "-s", str(workdir / "style.png"),
                                 "-o", str(out), "--quiet", *args])
    elapsed = time.monotonic() - started
    context = f"{command} {args}: exit {result.exit_code}\n{result.output}"
    # Anything but SystemExit is an exception that escaped the CLI (a traceback for the user).
    assert isinstance(result.exception, SystemExit), f"{context}\n{result.exception!r}"
    assert result.exit_code == 2, context  # a bad option, as the README says
    assert "Traceback" not in result.output, context
    messages, others = error_messages(result.output)
    assert len(messages) == 1 and not others, context
    assert any(name in messages[0] for name in names), context
    assert not out.exists(), f"{context}\nwork started: {out} was created"
    assert not list(workdir.rglob(".nst")), context
    assert elapsed < QUICK_SECONDS, f"{context}\ntook {elapsed:.1f} s"


@st.composite
def cli_case(draw, workdir: Path, command: str, bad_flag: str) -> tuple[list[str], tuple[str, ...]]:
    bad_args, names, bad_key = draw(bad_option(workdir, bad_flag))
    args = [f"{flag}={value}" for flag, value in BASELINE.items() if flag != bad_flag and OPTION_KEYS[flag] != bad_key]
    valid = valid_options(workdir, command)
    for flag in draw(st.lists(st.sampled_from(sorted(valid)), unique=True, max_size=4)):
        # A valid value for the faulty key would mask it, and a preset can make a faulty --config
        # document valid (its layer lists change how many weights are right).
        if flag == bad_flag or OPTION_KEYS.get(flag, "-") == bad_key or (flag == "--preset" and bad_flag == "--config"):
            continue
        value = draw(valid[flag])
        args.append(flag if value is None else f"{flag}={value}")
    args.extend(bad_args)
    return draw(st.permutations(args)), names


@pytest.mark.parametrize("flag", FLAGS["image"])
@given(data=st.data())
@examples("image_options")
def test_nst_image_refuses_every_invalid_value_before_any_work(workdir, cli_ready, flag, data):
    args, names = data.draw(cli_case(workdir, "image", flag))
    check_refused(workdir, "image", args, names)
    COUNTS["image_options"] += 1


@pytest.mark.parametrize("flag", FLAGS["run"])
@given(data=st.data())
@examples("run_options")
def test_nst_run_refuses_every_invalid_value_before_any_work(workdir, cli_ready, flag, data):
    args, names = data.draw(cli_case(workdir, "run", flag))
    check_refused(workdir, "run", args, names)
    COUNTS["run_options"] += 1


# Known gaps outside the configuration (strict: they fail loudly once fixed, so the marker goes).

def test_style_weight_nan_is_refused_first(workdir, tmp_path):
    # A missing photo keeps this from stylizing anything while the gap is open.
    result = runner.invoke(app, ["image", str(tmp_path / "absent.png"), "-s", str(workdir / "style.png"),
                                 "-o", str(tmp_path / "out"), "--style-weight=nan"])
    messages, _ = error_messages(result.output)
    assert result.exit_code == 2 and len(messages) == 1 and "--style-weight" in messages[0], result.output


def test_max_memory_beyond_float_range_is_one_error(workdir, cli_ready):
    check_refused(workdir, "image", ["--max-memory=" + "9" * 400 + "TB"], ("--max-memory", "image.max_memory"))
