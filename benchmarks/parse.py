"""DAG parse overhead: each example DAG against the same DAG shape built from ``EmptyOperator``s.

Two measurements, both interleaved (every repetition parses every file once, in a rotating
order) and reported as median and p90:

* **As the DAG processor parses** (many repetitions, in several zygotes): a zygote process
  loads what Airflow's DAG processor has loaded (``airflow.dag_processing.processor``, plus the ``airflow.*``
  modules each file imports, which the processor pre-imports before forking) and forks one
  fresh child per parse; the child runs the processor's own ``_parse_file`` (stability check,
  ``DagBag`` import of the file, serialization). Provider modules are imported by each child,
  as they are by each real parse. The provider's import cost per module is measured the same
  way.
* **In a fresh interpreter** (fewer repetitions, one file): a new ``python`` importing
  ``airflow.sdk`` and the DAG processor's module, then parsing the file the same way: what a
  process that starts cold pays.

The twin of each file is the same source with the provider's imports replaced by
``EmptyOperator`` subclasses accepting the same arguments (checked to parse to the same DAG
ids, task ids and dependencies): params, templates, ``@task`` functions and mapping stay, so
the difference is exactly what the provider adds.
"""

from __future__ import annotations

import argparse
import compileall
import gc
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, Table, airflow_env, compile_sources, median, percentile, run_child

#: What a DAG file imports (the DAG processor loads these on every parse).
DAG_MODULES = (
    "airflow_provider_nyne.operators.interactions",
    "airflow_provider_nyne.sensors.interactions",
    "airflow_provider_nyne.transfers.interactions_to_storage",
)
#: What running tasks and the triggerer load on top (the hook, its client, the trigger).
PROVIDER_MODULES = (
    "airflow_provider_nyne.hooks.nyne",
    *DAG_MODULES,
    "airflow_provider_nyne.triggers.interactions",
)
EMPTY_SUFFIX = "__empty_shape"
#: A package of empty modules in the bundle, imported by the zygote as the provider's own package
#: is: importing its modules in a forked parser is the floor of what any module costs, for scale.
EMPTY_PACKAGE = "_nyne_bench_empty"
EMPTY_MODULES = 10

#: Used when ``example_dags/`` has no DAG files: the shape of a typical provider DAG.
REPRESENTATIVE_DAG = '''"""Submit, wait in the triggerer, land in object storage."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

with DAG(
    dag_id="bench_representative",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
):
    submit = NyneSubmitInteractionsOperator(
        task_id="submit", social_media_url="https://x.com/nasa", interaction_type="followers"
    )
    wait = NyneInteractionsSensor(task_id="wait", request_id="{{ ti.xcom_pull(task_ids='submit') }}")
    land = NyneInteractionsToObjectStorageOperator(
        task_id="land",
        request_id="{{ ti.xcom_pull(task_ids='submit') }}",
        destination="file:///tmp/nyne-bench/{{ ds }}.jsonl",
    )
    submit >> wait >> land
'''


def example_files() -> list[Path]:
    """The example DAG files of the repository (``example_dags/*.py``)."""
    folder = ROOT / "example_dags"
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


# Children --------------------------------------------------------------------------------


STUBS_MODULE = "_nyne_bench_stubs"


def _stub_source(name: str, cls: type) -> str:
    """An EmptyOperator subclass taking the same keyword arguments as ``cls`` (so mapping works) and ignoring them."""
    import inspect

    from airflow.sdk import BaseOperator

    base = set(inspect.signature(BaseOperator.__init__).parameters)
    own = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in base and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    args = "".join(f"{arg}: Any = None, " for arg in own)
    return (
        f"class {name}(EmptyOperator):\n"
        f"    def __init__(self, *, {args}**kwargs: Any) -> None:\n"
        "        super().__init__(**kwargs)\n"
    )


def _write_twins(out: Path, files: Sequence[Path]) -> dict[str, Any]:
    """
    Write each file's twin: the same source with the provider's imports replaced by EmptyOperator stubs.

    Everything else (params, templates, @task functions, mapping, edges) stays, so the twin
    differs only by what the provider adds. Checked: the twin parses to the same DAG ids,
    task ids and dependencies.
    """
    import ast
    import importlib

    from airflow.sdk import BaseOperator

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag

    def shape(path: Path) -> dict[str, list[tuple[str, list[str]]]]:
        bag = DagBag(dag_folder=str(path), load_op_links=False)
        if bag.import_errors or not bag.dags:
            raise RuntimeError(f"{path.name} does not parse: {bag.import_errors}")
        return {
            dag.dag_id: sorted((t.task_id, sorted(t.upstream_task_ids)) for t in dag.tasks)
            for dag in bag.dags.values()
        }

    stubs: dict[str, str] = {}
    written = {}
    for path in files:
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        replace: list[tuple[int, int, str]] = []
        for node in tree.body:
            if not (
                isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_provider_nyne")
            ):
                continue
            module = importlib.import_module(node.module or "")
            names = []
            for alias in node.names:
                obj = getattr(module, alias.name)
                local = alias.asname or alias.name
                if isinstance(obj, type) and issubclass(obj, BaseOperator):
                    stubs[local] = _stub_source(local, obj)
                elif isinstance(obj, (str, int, float, bool)) or obj is None:
                    stubs[local] = f"{local} = {obj!r}\n"
                else:
                    raise RuntimeError(f"{path.name}: cannot stub {alias.name} from {node.module}")
                names.append(local)
            assert node.end_lineno is not None
            replace.append((node.lineno, node.end_lineno, f"from {STUBS_MODULE} import {', '.join(names)}"))
        for first, last, text in sorted(replace, reverse=True):
            lines[first - 1 : last] = [text]
        twin = out / f"{path.stem}{EMPTY_SUFFIX}.py"
        twin.write_text("\n".join(lines) + "\n")
        written[path.name] = {"twin": twin.name, "stubbed": sum(len(r[2].split(",")) for r in replace)}
    (out / f"{STUBS_MODULE}.py").write_text(
        '"""EmptyOperator stand-ins for the provider\'s classes (benchmark twins only)."""\n\n'
        "from __future__ import annotations\n\nfrom typing import Any\n\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n\n\n"
        + "\n\n".join(stubs[name] for name in sorted(stubs))
    )
    sys.path.insert(0, str(out))
    for path in files:
        original, twin_shape = shape(path), shape(out / written[path.name]["twin"])
        if original != twin_shape:
            raise RuntimeError(f"the twin of {path.name} has another shape: {original} != {twin_shape}")
        written[path.name]["dags"] = len(original)
        written[path.name]["tasks"] = sum(len(tasks) for tasks in original.values())
    return written


def _parse_once(path: str, bundle: str) -> int:
    """What the DAG processor does with one file; returns the number of DAGs serialized."""
    import structlog
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file

    fields: dict[str, Any] = {"file": path, "bundle_path": Path(bundle)}
    if "bundle_name" in DagFileParseRequest.model_fields:  # Airflow 3.2+
        fields["bundle_name"] = "bench"
    result = _parse_file(DagFileParseRequest(**fields), structlog.get_logger())
    if result is None or result.import_errors or not result.serialized_dags:
        raise RuntimeError(f"{path} did not parse: {result.import_errors if result else None}")
    return len(result.serialized_dags)


def _in_fork(action: Any) -> tuple[float, float]:
    """Run ``action`` in a forked child; return its wall and CPU seconds."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            action()
            payload = [time.perf_counter() - wall, time.process_time() - cpu]
        except BaseException as err:
            payload = [f"{type(err).__name__}: {err}"[:500]]
            code = 1
        os.write(write, json.dumps(payload).encode())
        os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    payload = json.loads(b"".join(chunks) or b'["no answer"]')
    if len(payload) != 2:
        raise RuntimeError(f"measurement failed in the child: {payload[0]}")
    return payload[0], payload[1]


def _zygote(bundle: Path, files: Sequence[str], reps: int) -> dict[str, Any]:
    import importlib

    import structlog
    from airflow.dag_processing.processor import _pre_import_airflow_modules

    log = structlog.get_logger()
    for path in files:
        _pre_import_airflow_modules(path, log)
    sys.path.append(str(bundle))
    importlib.import_module(EMPTY_PACKAGE)
    gc.collect()
    gc.freeze()  # as the DAG processor's manager does before forking parsers
    items: list[tuple[str, Any]] = [
        (f"parse:{Path(p).name}", lambda p=p: _parse_once(p, str(bundle))) for p in files
    ]
    items += [(f"import:{m}", lambda m=m: importlib.import_module(m)) for m in PROVIDER_MODULES]
    items.append(("import:dag", lambda: [importlib.import_module(m) for m in DAG_MODULES]))
    items.append(("import:all", lambda: [importlib.import_module(m) for m in PROVIDER_MODULES]))
    items.append(
        (
            "import:empty",
            lambda: [importlib.import_module(f"{EMPTY_PACKAGE}.m{i}") for i in range(EMPTY_MODULES)],
        )
    )
    results: dict[str, list[list[float]]] = {name: [] for name, _ in items}
    for rep in range(reps):
        shift = rep % len(items)
        for name, action in items[shift:] + items[:shift]:
            results[name].append(list(_in_fork(action)))
    # Last, in the zygote itself (no fork follows): how many provider modules a DAG file loads.
    before = set(sys.modules)
    for module in DAG_MODULES:
        importlib.import_module(module)
    loaded = sorted(m for m in set(sys.modules) - before if m.split(".")[0] == "airflow_provider_nyne")
    return {"results": results, "dag_loads": loaded}


def _fresh(path: str, bundle: str) -> dict[str, float]:
    """In this fresh interpreter: import Airflow's parsing machinery, then parse ``path`` as the processor does."""
    started = time.process_time()
    import airflow.dag_processing.processor
    import airflow.sdk  # noqa: F401

    imported = time.process_time()
    sys.path.append(bundle)
    _parse_once(path, bundle)
    return {"import_sdk_s": imported - started, "parse_s": time.process_time() - imported}


# Parent ----------------------------------------------------------------------------------


def _fmt(values: Sequence[float]) -> str:
    return f"{median(values) * 1000:.1f} / {percentile(values, 90) * 1000:.1f} ms"


#: Zygote processes per run: each one's memory layout shifts all its children's timings alike
#: (by up to a millisecond), so one zygote's medians move from run to run more than the
#: overhead measured; pooling several makes the figure repeatable.
ZYGOTES = 3


def parse_table(
    workdir: Path,
    reps: int = 15,
    fresh_reps: int = 5,
    files: Sequence[Path] | None = None,
    zygotes: int = ZYGOTES,
) -> Table:
    """Table 3: parse time of each example DAG against its EmptyOperator twin, and the provider's import cost."""
    bundle = workdir / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    sources = list(files) if files is not None else example_files()
    representative = not sources
    if representative:
        (bundle / "bench_representative.py").write_text(REPRESENTATIVE_DAG)
        sources = [bundle / "bench_representative.py"]
    copies = []
    for src in sources:
        dst = bundle / src.name
        if src.resolve() != dst.resolve():
            shutil.copy(src, dst)
        copies.append(dst)
    env = airflow_env(workdir)
    shapes = run_child("benchmarks.parse", ["--shapes", str(bundle), *map(str, copies)], env, timeout=300)
    empty = bundle / EMPTY_PACKAGE
    empty.mkdir(exist_ok=True)
    for name in ("__init__", *(f"m{i}" for i in range(EMPTY_MODULES))):
        (empty / f"{name}.py").write_text('"""Empty: what importing any module costs a forked parser."""\n')
    compile_sources()
    compileall.compile_dir(str(bundle), quiet=1)
    plan = []
    for copy in copies:
        plan += [str(copy), str(bundle / shapes[copy.name]["twin"])]
    fork: dict[str, list[list[float]]] = {}
    dag_loads: list[str] = []
    for _ in range(zygotes):
        one = run_child(
            "benchmarks.parse", ["--zygote", str(bundle), "--reps", str(reps), *plan], env, timeout=600
        )
        dag_loads = one["dag_loads"]
        for name, samples in one["results"].items():
            fork.setdefault(name, []).extend(samples)
    fresh_file = copies[0]
    fresh: dict[str, list[dict[str, float]]] = {
        str(fresh_file): [],
        str(bundle / shapes[fresh_file.name]["twin"]): [],
    }
    for _ in range(fresh_reps):
        for path in fresh:
            fresh[path].append(
                run_child("benchmarks.parse", ["--fresh", str(bundle), path], env, timeout=120)
            )

    table = Table(
        key="parse",
        title="DAG parse overhead: CPU time per parse (median / p90)",
        columns=["DAG file", "DAGs / tasks", "with the provider", "`EmptyOperator` twin", "overhead"],
    )
    for copy in copies:
        ours = [c for _, c in fork[f"parse:{copy.name}"]]
        twin = [c for _, c in fork[f"parse:{shapes[copy.name]['twin']}"]]
        # Each repetition parsed both files in the same zygote: compare them pairwise.
        extra = median([a - b for a, b in zip(ours, twin, strict=True)])
        info = shapes[copy.name]
        table.rows.append(
            [
                f"`{copy.name}` (as the DAG processor parses it)",
                f"{info['dags']} / {info['tasks']}",
                _fmt(ours),
                _fmt(twin),
                f"{extra * 1000:+.1f} ms ({extra / median(twin):+.0%})",
            ]
        )
    ours_fresh = [r["import_sdk_s"] + r["parse_s"] for r in fresh[str(fresh_file)]]
    twin_fresh = [
        r["import_sdk_s"] + r["parse_s"] for r in fresh[str(bundle / shapes[fresh_file.name]["twin"])]
    ]
    extra = median(ours_fresh) - median(twin_fresh)
    table.rows.append(
        [
            f"`{fresh_file.name}` (fresh interpreter: import Airflow + parse)",
            f"{shapes[fresh_file.name]['dags']} / {shapes[fresh_file.name]['tasks']}",
            _fmt(ours_fresh),
            _fmt(twin_fresh),
            f"{extra * 1000:+.0f} ms ({extra / median(twin_fresh):+.1%})",
        ]
    )
    labels = {
        "dag": "the operator, sensor and transfer modules together (what a DAG file imports)",
        "all": "all five modules (what a running task or the triggerer loads)",
        "empty": f"{EMPTY_MODULES} empty modules of an imported package (the floor of any import), for scale",
    }
    for module in (*PROVIDER_MODULES, "dag", "all", "empty"):
        walls = [c for _, c in fork[f"import:{module}"]]
        label = labels.get(module, f"`import {module}`")
        table.rows.append([f"{label}, after Airflow's own modules", "-", _fmt(walls), "-", "-"])
    table.notes += [
        f"{zygotes} zygotes x {reps} repetitions per file in forked children (each repetition parses "
        f"every file in a rotating order), {fresh_reps} in fresh interpreters. The overhead is the "
        "median of the differences between each repetition's parse and its twin's. "
        + ("No example DAGs were found, so a representative DAG was used. " if representative else "")
        + "The twin is the same file with the provider's classes replaced by `EmptyOperator` stand-ins "
        "(same tasks, edges, params, templates and mapping), so the overhead column is what using the "
        "provider adds to each parse: mostly importing its modules, once per parse process.",
        "CPU time (user + system) of the parsing process, less sensitive than wall time to the other "
        "processes on this shared machine; medians are the figures to compare, p90 shows the noise. "
        "Bytecode is compiled beforehand, as for an installed package.",
        f"A DAG file importing the operator, sensor and transfer loads {len(dag_loads)} provider modules "
        "that the DAG processor has not loaded before it forks (Airflow pre-imports only `airflow.*` "
        f"modules): {', '.join(f'`{m}`' for m in dag_loads)}. Each costs a forked parser at least what "
        "an empty module does (the last row, divided by "
        f"{EMPTY_MODULES}).",
    ]
    return table


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DAG parse overhead")
    parser.add_argument("--shapes", metavar="DIR", help="child: write EmptyOperator twins of FILES into DIR")
    parser.add_argument("--zygote", metavar="BUNDLE", help="child: measure parses of FILES by forking")
    parser.add_argument("--fresh", metavar="BUNDLE", help="child: import airflow.sdk, parse one file")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--fresh-reps", type=int, default=5)
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    if args.shapes:
        print(json.dumps(_write_twins(Path(args.shapes), [Path(f) for f in args.files])))
    elif args.zygote:
        print(json.dumps(_zygote(Path(args.zygote), args.files, args.reps)))
    elif args.fresh:
        print(json.dumps(_fresh(args.files[0], args.fresh)))
    else:
        from benchmarks._common import scratch_dir

        with scratch_dir("parse-") as workdir:
            files = [Path(f) for f in args.files] or None
            print(parse_table(workdir, args.reps, args.fresh_reps, files).markdown())


if __name__ == "__main__":
    _main()
