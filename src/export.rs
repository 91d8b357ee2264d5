//! Weights for use outside gantry: the generator as safetensors, which Python's `safetensors`
//! package (and PyTorch, JAX, numpy through it) reads. Tensor names follow the module tree
//! (`hidden.0.weight`, `norms.0.running_mean`, `output.bias`, ...); Dense kernels are stored
//! `[in, out]` as in Keras (transpose them for `torch.nn.Linear`).

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};

struct Collect {
    path: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values: Vec<f32> = tensor.into_data().try_into_vec().expect("the model computes in f32");
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((self.path.join("."), shape, bytes));
    }
}

/// The metadata key that holds the network's architecture: the run's `[model]` section as JSON.
pub const ARCHITECTURE_KEY: &str = "gantry.architecture";

/// Serialize a module's float tensors (parameters and running statistics) as safetensors bytes,
/// with `architecture` (the `[model]` section as JSON) in the metadata.
pub fn to_safetensors<M: Module>(module: &M, architecture: &str) -> Vec<u8> {
    let mut collect = Collect { path: Vec::new(), tensors: Vec::new() };
    module.visit(&mut collect);
    let views = collect.tensors.iter().map(|(name, shape, bytes)| {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches the data");
        (name.clone(), view)
    });
    // One metadata key only: several would be written in hash order, and the file must depend on
    // the weights and the architecture alone.
    let metadata = HashMap::from([(ARCHITECTURE_KEY.to_string(), architecture.to_string())]);
    safetensors::tensor::serialize(views, Some(metadata)).expect("valid f32 tensors serialize")
}

#[cfg(test)]
mod tests {
    use crate::config::ModelConfig;
    use crate::model::Generator;
    use burn::tensor::Device;
    use rand::SeedableRng;

    #[test]
    fn generator_exports_every_tensor_by_name() {
        let cfg = ModelConfig::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let g = Generator::new(&cfg, 784, &mut rng, &Device::flex());
        let bytes = g.safetensors("{}");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("hidden.0.weight").unwrap();
        assert_eq!(w.shape(), &[100, 256]);
        assert_eq!(st.tensor("output.weight").unwrap().shape(), &[1024, 784]);
        assert_eq!(st.tensor("norms.2.running_var").unwrap().shape(), &[1024]);
        // 3 Dense + output (weight, bias) and 3 BatchNorms (gamma, beta, mean, var).
        assert_eq!(st.len(), 4 * 2 + 3 * 4);
        // Same weights, same bytes.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let again = Generator::new(&cfg, 784, &mut rng, &Device::flex());
        assert_eq!(again.safetensors("{}"), bytes);
        assert_eq!(st_metadata(&bytes), Some("{}".to_string()));
    }

    fn st_metadata(bytes: &[u8]) -> Option<String> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
        meta.metadata().as_ref()?.get(super::ARCHITECTURE_KEY).cloned()
    }
}
