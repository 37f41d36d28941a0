"""The package layout: imports point from the runner down to the foundations, never back, and no
module imports itself through others (no cycle). Pure Python: reads the source with ast."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

# Lower layers never import higher ones; a layer may import its own modules.
LAYERS = [
    {"recsys.errors", "recsys.schemas", "recsys.sums", "recsys.job_report", "recsys.paths",
     "recsys.tasks", "recsys.strict_math"},
    {"recsys.config"},
    {"recsys.bigquery", "recsys.session"},
    {"recsys.sources", "recsys.sinks"},
    {"recsys.model"},
    {"recsys.evaluation"},
    {"recsys.compare"},
    {"recsys.runner"},
]


def modules():
    """{module name: set of recsys modules it imports} for every module of the package."""
    found = {}
    for dirpath, _, files in os.walk(os.path.join(REPO, "recsys")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
            module = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
            imports = set()
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module and \
                        node.module.startswith("recsys"):
                    imports.add(node.module)
                    imports.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    imports.update(a.name for a in node.names if a.name.startswith("recsys"))
            found[module] = imports
    return {m: {i for i in deps if i in found and i != m} for m, deps in found.items()}


def layer(module: str) -> int:
    for index, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return index
    raise AssertionError(f"{module} belongs to no layer of the layout")


def test_every_module_has_a_layer_and_imports_only_below_or_beside_it():
    wrong = [(m, d) for m, deps in modules().items() if m != "recsys" for d in deps
             if d != "recsys" and layer(d) > layer(m)]
    assert not wrong, wrong


def test_no_import_cycles_between_modules():
    graph = modules()
    # A package imports its own submodules on purpose (re-exports); those edges are not cycles.
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in edges.get(node, ()):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_every_package_says_what_it_owns():
    for package in ("sources", "sinks", "model", "evaluation", "compare", "runner"):
        doc = ast.get_docstring(ast.parse(open(os.path.join(REPO, "recsys", package,
                                                            "__init__.py")).read()))
        assert doc and "import" in doc.lower(), package


BENCHMARKS = sorted(n for n in os.listdir(os.path.join(REPO, "benchmarks")) if n.endswith(".py"))


@pytest.mark.parametrize("script", BENCHMARKS)
def test_every_benchmark_script_imports_and_prints_its_help(script):
    # The layout moved modules before (recsys.synthetic -> benchmarks/synthetic.py) and left two
    # scripts importing the old path; --help runs every import and the argument parser, no Spark.
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), "--help"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_a_task_function_imports_only_what_its_module_needs():
    """A Spark task's Python worker unpickling a function of one module imports that module's
    packages first: the model and evaluation packages must not drag in every model module
    (pyspark.ml is compiled from pyspark.zip's sources in each new worker: 0.6 s a worker).
    Their names still import as before, each the object its module defines."""
    code = (
        "import sys\n"
        "import recsys.model.rating_blocks, recsys.model.bqml_als, recsys.model.scoring\n"
        "import recsys.evaluation.metrics, recsys.sources.ratings_text\n"
        "heavy = {'recsys.model.train', 'recsys.model.spark_als', 'recsys.model.recommend',\n"
        "         'recsys.model.persistence', 'pandas'}\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.startswith('pyspark.ml')))\n"
        "import importlib, recsys.model as model\n"
        "wrong = [n for n, home in model._HOMES.items() if getattr(model, n) is not\n"
        "         getattr(importlib.import_module('recsys.model.' + home), n)]\n"
        "print(wrong, sorted(model.__all__) == sorted(model._HOMES))\n"
        "from recsys.model import fit, TrainedModel, recommend\n"
        "print(fit.__module__, TrainedModel.__module__, recommend.__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "[]", "[] True",
        "recsys.model.train recsys.model.trained_model recsys.model.recommend"]
