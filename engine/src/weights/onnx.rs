//! A VGG's convolutions out of an ONNX model: its `Conv` nodes in graph order,
//! their kernels (OIHW, as torchvision's) and biases taken from the initializers.
//!
//! Only the few ONNX messages and fields needed are declared; the field numbers are
//! onnx.proto's. Everything else in a model is skipped unread.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tch::{Kind, Tensor};

use crate::error::{EngineError, Result};

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    /// 1: the data is in another file (EXTERNAL).
    #[prost(int32, tag = "14")]
    data_location: i32,
}

/// TensorProto.DataType values this reader takes.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;

/// The tensors of `path`'s first `convs.len()` convolutions under the names
/// `{prefix}.weight` and `{prefix}.bias`, `convs` being the backbone's
/// `(prefix, weight shape)` in forward order.
pub(crate) fn read_vgg_convs(
    path: &Path,
    convs: &[(String, [i64; 4])],
) -> Result<HashMap<String, Tensor>> {
    let refuse = |reason: String| EngineError::Weights {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| refuse(format!("not an ONNX model ({e})")))?;
    let graph = model
        .graph
        .ok_or_else(|| refuse("not an ONNX model (it has no graph)".into()))?;
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let conv_nodes: Vec<&NodeProto> = graph.node.iter().filter(|n| n.op_type == "Conv").collect();
    if conv_nodes.len() < convs.len() {
        return Err(refuse(format!(
            "it has {} convolutions, the backbone needs {}",
            conv_nodes.len(),
            convs.len()
        )));
    }
    let mut tensors = HashMap::new();
    for (node, (prefix, weight_shape)) in conv_nodes.iter().zip(convs) {
        check_plain_conv(node).map_err(|reason| {
            refuse(format!("convolution '{}' ({prefix}): {reason}", node.name))
        })?;
        let bias_shape = [weight_shape[0]];
        let params = [("weight", &weight_shape[..]), ("bias", &bias_shape[..])];
        for (input, (param, shape)) in node.input.iter().skip(1).zip(params) {
            let name = format!("{prefix}.{param}");
            let initializer = initializers.get(input.as_str()).ok_or_else(|| {
                refuse(format!(
                    "tensor '{input}' (as {name}) is not an initializer of the graph"
                ))
            })?;
            let tensor = tensor_from(initializer)
                .map_err(|reason| refuse(format!("tensor '{input}' (as {name}): {reason}")))?;
            if tensor.size() != shape {
                return Err(refuse(format!(
                    "tensor '{input}' (as {name}) has shape {:?}, expected {shape:?}",
                    tensor.size()
                )));
            }
            tensors.insert(name, tensor);
        }
        if node.input.len() < 3 {
            return Err(refuse(format!(
                "convolution '{}' ({prefix}) has no bias",
                node.name
            )));
        }
    }
    Ok(tensors)
}

/// VGG's convolutions are dense, stride 1, undilated.
fn check_plain_conv(node: &NodeProto) -> std::result::Result<(), String> {
    for attribute in &node.attribute {
        let plain = match attribute.name.as_str() {
            "group" => attribute.i == 1,
            "strides" | "dilations" => attribute.ints.iter().all(|&v| v == 1),
            _ => true,
        };
        if !plain {
            return Err(format!(
                "its {} is not VGG's ({:?})",
                attribute.name,
                if attribute.ints.is_empty() {
                    vec![attribute.i]
                } else {
                    attribute.ints.clone()
                }
            ));
        }
    }
    Ok(())
}

/// An initializer's values, from `raw_data` (little-endian) or the typed fields.
fn tensor_from(proto: &TensorProto) -> std::result::Result<Tensor, String> {
    if proto.data_location == 1 {
        return Err("its data is in an external file, which this reader does not follow".into());
    }
    let count: i64 = proto.dims.iter().product();
    let (kind, element_size) = match proto.data_type {
        FLOAT => (Kind::Float, 4),
        DOUBLE => (Kind::Double, 8),
        FLOAT16 => (Kind::Half, 2),
        other => return Err(format!("data type {other} is not a floating-point type")),
    };
    let tensor = if !proto.raw_data.is_empty() {
        if proto.raw_data.len() as i64 != count * element_size {
            return Err(format!(
                "{} bytes of data for {count} values of {element_size} bytes",
                proto.raw_data.len()
            ));
        }
        Tensor::f_from_data_size(&proto.raw_data, &proto.dims, kind)
    } else if proto.data_type == FLOAT && proto.float_data.len() as i64 == count {
        Tensor::f_from_slice(&proto.float_data).and_then(|t| t.f_view(proto.dims.as_slice()))
    } else if proto.data_type == DOUBLE && proto.double_data.len() as i64 == count {
        Tensor::f_from_slice(&proto.double_data).and_then(|t| t.f_view(proto.dims.as_slice()))
    } else {
        return Err(format!("it does not hold its {count} values"));
    };
    tensor.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initializer(name: &str, dims: &[i64], values: &[f32], raw: bool) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: if raw { vec![] } else { values.to_vec() },
            name: name.into(),
            raw_data: if raw {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                vec![]
            },
            double_data: vec![],
            data_location: 0,
        }
    }

    fn conv(name: &str, inputs: &[&str]) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            name: name.into(),
            op_type: "Conv".into(),
            attribute: vec![AttributeProto {
                name: "strides".into(),
                i: 0,
                ints: vec![1, 1],
            }],
        }
    }

    #[test]
    fn reads_raw_and_typed_data_in_graph_order() {
        let weight: Vec<f32> = (0..2 * 3).map(|v| v as f32).collect();
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![conv("c1", &["x", "w", "b"])],
                initializer: vec![
                    initializer("w", &[2, 3, 1, 1], &weight, true),
                    initializer("b", &[2], &[0.5, -0.5], false),
                ],
            }),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        let tensors = read_vgg_convs(&path, &[("features.0".into(), [2, 3, 1, 1])]).unwrap();
        let w = &tensors["features.0.weight"];
        assert_eq!(w.size(), [2, 3, 1, 1]);
        assert_eq!(w.double_value(&[1, 2, 0, 0]), 5.0);
        assert_eq!(tensors["features.0.bias"].double_value(&[1]), -0.5);

        let err = read_vgg_convs(&path, &[("features.0".into(), [2, 3, 3, 3])])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("m.onnx") && err.contains("'w'") && err.contains("features.0.weight"),
            "{err}"
        );
    }
}
