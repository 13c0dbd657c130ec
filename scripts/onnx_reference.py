#!/usr/bin/env python3
"""The convolutions' outputs of a VGG-like ONNX model, as onnxruntime computes them:
the reference that `pastiche weights import` of an ONNX file is checked against.

    onnx_reference.py --model vgg16.onnx --input image.safetensors --convention caffe \
        --out convs.safetensors

--input holds `input`, an RGB image [1, 3, H, W] in [0, 1]; it is preprocessed here as
the convention says and laid out as the model's input wants (NHWC for a Keras model).
The output holds each Conv node's output (before its ReLU), NCHW, under its ordinal
in graph order ("0", "1", ...). The graph is cut after its last Conv and its input
made any size, so the classifier's fixed input size does not matter.

Run with the reference environment (.deps/reference/bin/python).
"""

import argparse

import numpy as np
import onnx
import onnxruntime
from safetensors.numpy import load_file, save_file

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


def preprocess(image, convention):
    if convention == "caffe":
        return image[:, ::-1] * 255 - CAFFE_MEAN_BGR
    return (image - IMAGENET_MEAN) / IMAGENET_STD


def conv_outputs_model(model):
    """The model cut after its last Conv, with every Conv's output a graph output."""
    graph = model.graph
    convs = [i for i, node in enumerate(graph.node) if node.op_type == "Conv"]
    names = [graph.node[i].output[0] for i in convs]
    del graph.node[convs[-1] + 1 :]
    del graph.output[:]
    del graph.value_info[:]
    for name in names:
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    for i, dim in enumerate(graph.input[0].type.tensor_type.shape.dim):
        dim.Clear()
        dim.dim_param = f"d{i}"
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model, names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--convention", choices=("torchvision", "caffe"), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    original = onnx.load(args.model)
    channels_last = original.graph.input[0].type.tensor_type.shape.dim[-1].dim_value == 3
    model, names = conv_outputs_model(original)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = preprocess(load_file(args.input)["input"].astype(np.float32), args.convention)
    if channels_last:
        x = x.transpose(0, 2, 3, 1)
    outputs = session.run(names, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
    save_file({str(i): np.ascontiguousarray(out) for i, out in enumerate(outputs)}, args.out)


if __name__ == "__main__":
    main()
