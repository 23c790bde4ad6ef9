"""TFLearn's graph reduced to its inference path, with weights as constants, for TFLite.

TFLearn builds every layer that behaves differently in training (dropout, batch
normalization) as a TF1 ``tf.cond`` on its ``is_training`` variable; the training
branch assigns to batch-norm's moving averages. TensorFlow's freezing cannot turn
those resource assignments into constants, so the converter refuses the graph. Here
the condition is fixed to False (inference), the training branch is cut away like the
dead branch it then is, and the remaining variable reads become constants.

Pure GraphDef surgery: imports TensorFlow only, never TFLearn or Keras.
"""
from __future__ import annotations

import tensorflow as tf

v1 = tf.compat.v1


def _name(reference: str) -> tuple[str, int, bool]:
    """'^a' / 'a' / 'a:1' -> (node name, output index, is a control input)."""
    control = reference.startswith("^")
    reference = reference.lstrip("^")
    name, _, index = reference.partition(":")
    return name, int(index or 0), control


def inference_graph_def(session, input_name: str, output_name: str) -> "tf.compat.v1.GraphDef":
    """The graph that computes ``output_name`` from ``input_name`` with training off."""
    graph = session.graph
    graph_def = graph.as_graph_def()
    nodes = {node.name: node for node in graph_def.node}
    (flag,) = graph.get_collection("is_training")
    flag_handle = flag.op.name if flag.op.type == "VarHandleOp" else flag.handle.op.name

    false_nodes: set[str] = set()      # nodes whose value is the training flag, i.e. False
    aliases: dict[str, str] = {}       # 'merge:0' -> the input of its live branch
    dead: dict[str, bool] = {}

    def is_false(name: str) -> bool:
        node = nodes[name]
        if name in false_nodes:
            return True
        if node.op == "ReadVariableOp" and _name(node.input[0])[0] == flag_handle:
            false_nodes.add(name)
            return True
        if node.op == "Identity" and is_false(_name(node.input[0])[0]):
            false_nodes.add(name)
            return True
        return False

    def is_dead(name: str) -> bool:
        if name in dead:
            return dead[name]
        node = nodes[name]
        dead[name] = False   # provisional, for cycles (there are none in cond graphs)
        inputs = [_name(r) for r in node.input]
        if node.op == "Merge":
            live = [f"{n}:{i}" for n, i, control in inputs if not control and not _input_dead(n, i)]
            if len(live) != 1:
                raise ValueError(f"cannot reduce {name}: {len(live)} live branches")
            aliases[f"{name}:0"] = _resolve(live[0])
            result = False
        else:
            result = any(_input_dead(n, i) for n, i, _ in inputs)
        dead[name] = result
        return result

    def _input_dead(name: str, index: int) -> bool:
        node = nodes[name]
        if node.op == "Switch" and is_false(_name(node.input[1])[0]):
            # Output 1 is the training branch; output 0 is its data input (see _resolve).
            return index == 1 or is_dead(_name(node.input[0])[0])
        return is_dead(name)

    def _resolve(reference: str) -> str:
        name, index, _ = _name(reference)
        key = f"{name}:{index}"
        node = nodes[name]
        if node.op == "Switch" and is_false(_name(node.input[1])[0]):
            return _resolve(node.input[0])
        if node.op == "Merge":
            is_dead(name)
        return aliases.get(key, key)

    output_node = _name(output_name)[0]
    if is_dead(output_node):
        raise ValueError(f"{output_name} is only computed in training")

    values = {v.op.name: session.run(v) for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
              if v.op.name in nodes and nodes[v.op.name].op == "VarHandleOp"}
    kept, stack = {}, [output_node]
    input_node = _name(input_name)[0]
    while stack:
        name = stack.pop()
        if name in kept:
            continue
        original = nodes[name]
        inputs = [] if name == input_node else [
            _short(_resolve(reference)) for reference in original.input
            # live nodes' control inputs only order training-time updates
            if not reference.startswith("^")]
        if original.op == "Merge":
            node = _identity(name, _short(_resolve(f"{name}:0")), original.attr["T"])
        elif original.op == "VarHandleOp":
            node = _constant(name, values[name])
        elif original.op == "ReadVariableOp":
            node = _identity(name, inputs[0], original.attr["dtype"])
        else:
            node = v1.NodeDef()
            node.CopyFrom(original)
            del node.input[:]
            node.input.extend(inputs)
        kept[name] = node
        stack.extend(_name(r)[0] for r in node.input)
    reduced = v1.GraphDef()
    reduced.versions.CopyFrom(graph_def.versions)
    reduced.node.extend(kept.values())
    return reduced


def _short(reference: str) -> str:
    return reference[:-2] if reference.endswith(":0") else reference


def _identity(name: str, source: str, dtype_attr) -> "tf.compat.v1.NodeDef":
    node = v1.NodeDef(name=name, op="Identity", input=[source])
    node.attr["T"].CopyFrom(dtype_attr)
    return node


def _constant(name: str, value) -> "tf.compat.v1.NodeDef":
    tensor = tf.make_tensor_proto(value)
    node = v1.NodeDef(name=name, op="Const")
    node.attr["value"].tensor.CopyFrom(tensor)
    node.attr["dtype"].type = tensor.dtype
    return node
