"""LoRA on OpenVINO's graph: the linear layers of a converted IR by their torch names, a run-time branch beside each
adapted layer, and an adapter folded into a layer's weights.

The branch is openvino.genai's dynamic mode, in Python: each adapted linear ``y = x Wᵀ + b`` becomes
``y + (x Aᵀ) Bᵀ``, with ``A`` (``lora_down.<layer>``, rank × in) and ``B`` (``lora_up.<layer>``, out × rank) inputs
of the compiled model whose rank is left dynamic. Several adapters are their A and B stacked along the rank, each
scaled by its weight, so switching adapters or strengths changes the tensors fed, never the compiled model; with no
adapter active the rank is 0 and the branch adds nothing. In a W8A8 IR the branch reads the activation before its
INT8 quantization, so the adapter runs in floating point beside the INT8 matrix multiply.
"""

from __future__ import annotations

import re

import numpy as np
import openvino as ov
import openvino.opset13 as ops

DOWN, UP = "lora_down.", "lora_up."
# diffusers' torch modules as OpenVINO's PyTorch frontend names their linear layers: the export wrapper's attribute
# (``transformer``, ``text_encoder``), then the module's path.
_LINEAR_NAME = re.compile(r"^__module\.[A-Za-z_]+\.(?P<layer>.+)/aten::linear/MatMul$")
_FLOAT_WEIGHTS = {ov.Type.f32, ov.Type.f16, ov.Type.bf16}


class LoraShapeError(ValueError):
    """An adapter's matrices do not fit the layer they name (an adapter for another model)."""


def linear_layers(model: ov.Model) -> dict[str, ov.Node]:
    """The MatMul of each linear layer with constant weights, by its torch module path (``transformer_blocks.0.attn1.to_q``)."""
    layers = {}
    for node in model.get_ordered_ops():
        match = _LINEAR_NAME.match(node.get_friendly_name()) if node.get_type_name() == "MatMul" else None
        if match and _weight_source(node) is not None:
            layers[match["layer"]] = node
    return layers


def _weight_source(matmul: ov.Node) -> ov.Node | None:
    """The constant a linear layer's weights come from (through decompression or quantization ops), or None."""
    node = matmul.input_value(1).get_node()
    while node.get_type_name() != "Constant":
        if node.get_type_name() not in {"Convert", "Multiply", "Subtract", "Reshape", "FakeQuantize"}:
            return None
        node = node.input_value(0).get_node()
    return node


def _float_weights(matmul: ov.Node) -> ov.Node | None:
    """The layer's weight constant when it is stored in floating point (at most a Convert from it to the MatMul)."""
    node = matmul.input_value(1).get_node()
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" and node.get_element_type() in _FLOAT_WEIGHTS else None


def layer_shape(matmul: ov.Node) -> tuple[int, int]:
    """(out features, in features) of a linear layer."""
    out_features, in_features = matmul.get_input_partial_shape(1).to_shape()
    return int(out_features), int(in_features)


def check_fits(layer: str, shape: tuple[int, int], down: np.ndarray, up: np.ndarray) -> None:
    """Refuse, naming the layer and both shapes, A and B matrices that do not fit a layer of ``shape`` (out, in)."""
    out_features, in_features = shape
    if down.shape[1] != in_features or up.shape[0] != out_features or down.shape[0] != up.shape[1]:
        raise LoraShapeError(
            f"The adapter does not fit layer {layer}: the layer maps {in_features} → {out_features} features, the "
            f"adapter's lora_A is {list(down.shape)} (rank × in) and lora_B {list(up.shape)} (out × rank). It was "
            f"made for another model: load an adapter made for this one."
        )


def _linear_output(matmul: ov.Node) -> ov.Output:
    """The linear layer's output: after its bias Add when it has one, else the MatMul's."""
    consumers = list(matmul.output(0).get_target_inputs())
    if len(consumers) == 1:
        add = consumers[0].get_node()
        bias = add.input_value(1 - consumers[0].get_index()).get_node()
        if add.get_type_name() == "Add" and bias.get_type_name() in {"Constant", "Convert"}:
            return add.output(0)
    return matmul.output(0)


def _activation(matmul: ov.Node) -> ov.Output:
    """The layer's input activation, before INT8 quantization where the IR quantizes it (W8A8)."""
    value = matmul.input_value(0)
    return value.get_node().input_value(0) if value.get_node().get_type_name() == "FakeQuantize" else value


def add_branches(model: ov.Model, layers: list[str]) -> ov.Model:
    """Give ``model`` a run-time LoRA branch beside each of ``layers``, with inputs ``lora_down.<layer>`` and
    ``lora_up.<layer>`` (rank dynamic). Edits ``model`` in place and returns it."""
    found, parameters = linear_layers(model), []
    for layer in layers:
        matmul = found[layer]
        out_features, in_features = layer_shape(matmul)
        down = ops.parameter([-1, in_features], ov.Type.f32, name=DOWN + layer)
        up = ops.parameter([out_features, -1], ov.Type.f32, name=UP + layer)
        for parameter in (down, up):
            parameter.output(0).get_tensor().set_names({parameter.get_friendly_name()})
        output = _linear_output(matmul)
        targets = list(output.get_target_inputs())
        # the frontend may fold a transpose of the activation into the MatMul (ToDo's pooled keys and values)
        low_rank = ops.matmul(_activation(matmul), down, transpose_a=matmul.get_attributes()["transpose_a"], transpose_b=True)
        delta = ops.matmul(low_rank, up, transpose_a=False, transpose_b=True)
        adapted = ops.add(output, ops.convert_like(delta, output) if output.get_element_type() != ov.Type.f32 else delta)
        for target in targets:
            target.replace_source_output(adapted.output(0))
        parameters += [down, up]
    model.add_parameters(parameters)
    model.validate_nodes_and_infer_types()
    return model


def fuse_into_weights(model: ov.Model, deltas: dict[str, np.ndarray]) -> ov.Model:
    """Fold each ``deltas[layer]`` (out × in, ``scale · B A``) into that layer's weights. Only floating-point weights
    can take it: an INT8 or INT4 layer is refused, naming it. Edits ``model`` in place and returns it."""
    found = linear_layers(model)
    check_foldable(found, set(deltas))
    for layer, delta in deltas.items():
        constant = _float_weights(found[layer])
        weights = constant.get_data().astype(np.float32) + delta.reshape(constant.get_output_shape(0))
        folded = ops.constant(weights.astype(constant.get_data().dtype))
        folded.set_friendly_name(constant.get_friendly_name())
        for target in list(constant.output(0).get_target_inputs()):
            target.replace_source_output(folded.output(0))
    model.validate_nodes_and_infer_types()
    return model


def check_foldable(found: dict[str, ov.Node], layers: set[str]) -> None:
    """Refuse, naming the first such layer of ``found`` (``linear_layers``), to fold an adapter into weights stored
    compressed (INT8, INT4)."""
    for layer in sorted(layers):
        if _float_weights(found[layer]) is None:
            kind = _weight_source(found[layer]).get_element_type().get_type_name()
            raise ValueError(
                f"fuse_lora can't fold the adapter into layer {layer}: its weights are stored as {kind} (a compressed "
                f"variant), and folding would quantize the adapter away. Keep it at run time (set_adapters), or fuse "
                f"it into the FP16 variant and compress that."
            )


def adapter_feed(layers: list[str], stacks: dict[str, tuple[np.ndarray, np.ndarray]], shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The inputs of the branched layers: each layer's stacked, scaled A and B, or rank-0 matrices for a layer no
    active adapter touches (the branch then adds exactly nothing)."""
    feed = {}
    for layer in layers:
        out_features, in_features = shapes[layer]
        down, up = stacks.get(layer, (np.zeros((0, in_features), np.float32), np.zeros((out_features, 0), np.float32)))
        feed[DOWN + layer], feed[UP + layer] = down, up
    return feed
