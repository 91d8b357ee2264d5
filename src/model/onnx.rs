//! ONNX, the one owner of the format: the protobuf messages gantry writes (a subset of
//! `onnx.proto3`, encoded with `prost`) and a small builder of a generator's graph that each kind
//! of network fills with its layers (`mlp.rs`, `dcgan.rs`). Opset 17, IR version 8; the batch axis
//! is dynamic (`N`).

use burn::nn::{BatchNorm, Linear};
use burn::tensor::Tensor;
use prost::Message;

/// The opset the graphs use (LeakyRelu, BatchNormalization, ConvTranspose, OneHot: all older).
pub const OPSET: i64 = 17;
/// The IR version of opset 17.
const IR_VERSION: i64 = 8;
const FLOAT: i32 = 1;
const INT64: i32 = 7;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// FLOAT 1, INT 2, INTS 7.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian values.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// An attribute of a node.
pub enum Attr {
    Float(f32),
    Int(i64),
    Ints(Vec<i64>),
}

/// A graph being built: nodes in order, their weights as initializers, names made unique.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    count: usize,
}

impl Graph {
    /// Add a node `op` on `inputs` with `attributes`; returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<(&str, Attr)>) -> String {
        self.count += 1;
        let output = format!("{}_{}", op.to_lowercase(), self.count);
        let attribute = attributes
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto { name: name.to_string(), ..Default::default() };
                match a {
                    Attr::Float(f) => (p.f, p.r#type) = (f, 1),
                    Attr::Int(i) => (p.i, p.r#type) = (i, 2),
                    Attr::Ints(v) => (p.ints, p.r#type) = (v, 7),
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.to_string(),
            attribute,
        });
        output
    }

    /// A float weight named `name` (the module path gantry's records and safetensors use).
    pub fn weight<const D: usize>(&mut self, name: &str, tensor: &Tensor<D>) -> String {
        let values: Vec<f32> = tensor.clone().into_data().try_into_vec().expect("the model computes in f32");
        self.floats(name, tensor.dims().as_slice(), &values)
    }

    /// A float constant of shape `dims`.
    pub fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = dims.iter().map(|&d| d as i64).collect();
        self.initializers.push(TensorProto { dims, data_type: FLOAT, name: name.to_string(), raw_data });
        name.to_string()
    }

    /// An int64 constant (shapes, depths).
    pub fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = vec![values.len() as i64];
        self.initializers.push(TensorProto { dims, data_type: INT64, name: name.to_string(), raw_data });
        name.to_string()
    }

    /// `x W (+ b)`: a Dense layer named `name` (its weight `[in, out]` as gantry keeps it).
    pub fn dense(&mut self, x: &str, layer: &Linear, name: &str) -> String {
        let w = self.weight(&format!("{name}.weight"), &layer.weight.val());
        let y = self.node("MatMul", &[x, &w], vec![]);
        match &layer.bias {
            Some(bias) => {
                let b = self.weight(&format!("{name}.bias"), &bias.val());
                self.node("Add", &[&y, &b], vec![])
            }
            None => y,
        }
    }

    /// Inference BatchNorm over dimension 1 (moving statistics), named `name`.
    pub fn batch_norm(&mut self, x: &str, norm: &BatchNorm, name: &str) -> String {
        let gamma = self.weight(&format!("{name}.gamma"), &norm.gamma.val());
        let beta = self.weight(&format!("{name}.beta"), &norm.beta.val());
        let mean = self.weight(&format!("{name}.running_mean"), &norm.running_mean.value());
        let var = self.weight(&format!("{name}.running_var"), &norm.running_var.value());
        let epsilon = Attr::Float(norm.epsilon as f32);
        self.node("BatchNormalization", &[x, &gamma, &beta, &mean, &var], vec![("epsilon", epsilon)])
    }

    pub fn leaky_relu(&mut self, x: &str, slope: f64) -> String {
        self.node("LeakyRelu", &[x], vec![("alpha", Attr::Float(slope as f32))])
    }

    /// `x` reshaped to `[N, rest...]` (the batch axis kept whatever its size).
    pub fn reshape(&mut self, x: &str, rest: &[usize]) -> String {
        let shape: Vec<i64> = std::iter::once(-1).chain(rest.iter().map(|&d| d as i64)).collect();
        self.count += 1;
        let s = self.int64s(&format!("shape_{}", self.count), &shape);
        self.node("Reshape", &[x, &s], vec![])
    }

    /// The model: inputs `z` [N, latent] and, with `ids` > 0, `class` [N] (int64, 0 to ids - 1,
    /// joined to the noise as a one-hot vector); output `image` [N, c, h, w] from `build`, which
    /// adds the layers to the graph from G's input [N, latent + ids] and returns its output
    /// [N, c·h·w] or [N, c, h, w]. `metadata`: key-value pairs kept in the file.
    pub fn model(
        latent: usize,
        ids: usize,
        (c, h, w): (usize, usize, usize),
        metadata: Vec<(String, String)>,
        build: impl FnOnce(&mut Graph, String) -> String,
    ) -> Vec<u8> {
        let mut g = Graph::default();
        let batch = || Dimension { dim_value: None, dim_param: Some("N".into()) };
        let fixed = |d: usize| Dimension { dim_value: Some(d as i64), dim_param: None };
        let value = |name: &str, elem_type: i32, dim: Vec<Dimension>| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto { elem_type, shape: Some(TensorShapeProto { dim }) }),
            }),
        };
        let mut inputs = vec![value("z", FLOAT, vec![batch(), fixed(latent)])];
        let x = if ids > 0 {
            inputs.push(value("class", INT64, vec![batch()]));
            let depth = g.int64s("class_depth", &[ids as i64]);
            let on_off = g.floats("class_values", &[2], &[0.0, 1.0]);
            let one_hot = g.node("OneHot", &["class", &depth, &on_off], vec![("axis", Attr::Int(-1))]);
            g.node("Concat", &["z", &one_hot], vec![("axis", Attr::Int(1))])
        } else {
            "z".to_string()
        };
        let y = build(&mut g, x);
        let image = g.reshape(&y, &[c, h, w]);
        let graph = GraphProto {
            node: g.nodes,
            name: "gantry_generator".into(),
            initializer: g.initializers,
            input: inputs,
            output: vec![value(&image, FLOAT, vec![batch(), fixed(c), fixed(h), fixed(w)])],
        };
        let mut model = ModelProto {
            ir_version: IR_VERSION,
            producer_name: "gantry".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: "A gantry generator: noise z ~ N(0, 1) (and a class) -> images in [-1, 1]".into(),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value })
                .collect(),
        };
        rename_output(&mut model, "image");
        model.encode_to_vec()
    }
}

/// Name the graph's output `name` (the last node's output, renamed where it is produced).
fn rename_output(model: &mut ModelProto, name: &str) {
    let Some(graph) = model.graph.as_mut() else { return };
    let Some(old) = graph.output.first().map(|o| o.name.clone()) else { return };
    for node in &mut graph.node {
        for out in &mut node.output {
            if *out == old {
                *out = name.to_string();
            }
        }
    }
    graph.output[0].name = name.to_string();
}
