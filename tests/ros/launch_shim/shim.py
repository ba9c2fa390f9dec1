"""Evaluates a launch file with the stand-in `launch`/`launch_ros` modules and returns
the command line launch_ros would run for its bayes_perception_node."""
import importlib.util
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


class Context:
    def __init__(self, launch_configurations, package_shares):
        self.launch_configurations = launch_configurations
        self.package_shares = package_shares


def launch_command(launch_file, arguments, package_shares, tmp_dir):
    """(executable name, [--ros-args ...]) for the node `launch_file` starts with the launch
    `arguments` (name -> value), as launch_ros builds it: node name and namespace
    remaps, one --params-file per parameters entry (dicts written to a temporary file under
    the node's full name, as launch_ros does for a named node), then the remappings."""
    return _evaluate(launch_file, arguments, package_shares, lambda kw, context: _command(kw, context, tmp_dir))


def launch_process_options(launch_file, arguments, package_shares):
    """How launch runs the node's process: its `respawn`, `respawn_delay`,
    `respawn_max_retries` and `sigterm_timeout` arguments (None where not given)."""
    return _evaluate(
        launch_file,
        arguments,
        package_shares,
        lambda kw, context: {
            k: kw.get(k) for k in ("respawn", "respawn_delay", "respawn_max_retries", "sigterm_timeout")
        },
    )


def _evaluate(launch_file, arguments, package_shares, read):
    """`read(kwargs, context)` of the bayes_perception_node action `launch_file` gives with
    `arguments`."""
    sys.path.insert(0, str(HERE))
    try:
        spec = importlib.util.spec_from_file_location("launch_under_test", launch_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from launch.actions import DeclareLaunchArgument, OpaqueFunction
        from launch.substitutions import perform
        from launch_ros.actions import Node

        description = module.generate_launch_description()
        context = Context({}, package_shares)
        declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
        unknown = set(arguments) - {d.name for d in declared}
        if unknown:
            raise ValueError(f"the launch file declares no argument {sorted(unknown)}")
        for d in declared:
            context.launch_configurations[d.name] = perform(d.default_value, context)
        context.launch_configurations.update(arguments)
        actions = []
        for entity in description.entities:
            if isinstance(entity, OpaqueFunction):
                actions.extend(entity.function(context))
        nodes = [
            a for a in actions
            if isinstance(a, Node) and a.kwargs.get("executable") == "bayes_perception_node"
        ]
        if len(nodes) != 1:
            raise ValueError(f"expected one bayes_perception_node, found {len(nodes)}")
        return read(nodes[0].kwargs, context)
    finally:
        sys.path.remove(str(HERE))
        for name in [m for m in sys.modules if m == "launch" or m.startswith(("launch.", "launch_ros"))]:
            del sys.modules[name]


def _command(kw, context, tmp_dir):
    """The command line of the node action `kw` (see launch_command)."""
    from launch.substitutions import perform

    args = ["--ros-args", "-r", f"__node:={kw['name']}"]
    namespace = perform(kw.get("namespace", ""), context)
    if namespace:
        args += ["-r", f"__ns:={namespace if namespace.startswith('/') else '/' + namespace}"]
    # launch_ros writes a dict of parameters under the node's full name when the
    # launch file gives its name and namespace, as ours always does.
    fqn = f"/{namespace.strip('/')}/{kw['name']}" if namespace.strip("/") else f"/{kw['name']}"
    for i, entry in enumerate(kw.get("parameters", [])):
        if isinstance(entry, dict):
            path = Path(tmp_dir) / f"launch_params_{i}.yaml"
            path.write_text(yaml.safe_dump({fqn: {"ros__parameters": entry}}))
            entry = path
        args += ["--params-file", perform(entry, context)]
    for source, target in kw.get("remappings", []):
        args += ["-r", f"{perform(source, context)}:={perform(target, context)}"]
    return kw["executable"], args
