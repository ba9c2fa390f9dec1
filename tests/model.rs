//! Model construction for every preset, and model directories: exact save/load round trip
//! and load errors that name the file and the problem.

mod common;

use std::path::Path;

use bayes_perception::model::{
    random_spec, ArchConfig, Architecture, Model, ModelSpec, Pass, PRESETS,
};
use tch::{Device, Kind, Tensor};

#[test]
fn every_preset_builds_with_expected_size_and_output_shapes() {
    // (preset, parameter count the papers give, in millions)
    let expected = [
        ("fcdensenet56", 1.5),
        ("fcdensenet67", 3.5),
        ("fcdensenet103", 9.4),
    ];
    assert_eq!(PRESETS.len(), expected.len());
    for (name, millions) in expected {
        let arch = ArchConfig::preset(name).unwrap();
        let model = Model::new(
            random_spec(arch.clone(), Some(name), 11, true, 32, 32),
            Device::Cpu,
        )
        .unwrap();
        // The heads add a few thousand parameters; the backbone must be within 10 %.
        let params = model.num_parameters() as f64 / 1e6;
        assert!(
            (params - millions).abs() / millions < 0.10,
            "{name}: {params:.2} M parameters, paper {millions} M"
        );
        // The size bound that guards loading counts exactly what the VarStore holds
        // (weights, biases, BatchNorm statistics).
        let stored: i64 = model
            .vs
            .variables()
            .values()
            .map(|t| t.numel() as i64)
            .sum();
        let counted = arch.stored_values(model.spec.heads());
        assert_eq!(counted, stored as f64, "{name}");
        let _guard = tch::no_grad_guard();
        let out = model.net.forward(
            &Tensor::zeros([2, 3, 32, 64], (Kind::Float, Device::Cpu)),
            Pass::Eval,
        );
        let (logits, s) = out.semantic.unwrap();
        assert_eq!(logits.size(), [2, 11, 32, 64], "{name}");
        assert_eq!(s.size(), [2, 11, 32, 64], "{name}");
        assert_eq!(logits.kind(), Kind::Float);
        let (mean, s) = out.depth.unwrap();
        assert_eq!(mean.size(), [2, 1, 32, 64], "{name}");
        assert_eq!(s.size(), [2, 1, 32, 64], "{name}");
    }
}

#[test]
fn heads_follow_the_tasks() {
    let semantic_only = common::tiny_model(5, false);
    let _guard = tch::no_grad_guard();
    let x = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = semantic_only.net.forward(&x, Pass::Eval);
    assert!(out.semantic.is_some() && out.depth.is_none());
    let depth_only = common::tiny_model(0, true);
    let out = depth_only.net.forward(&x, Pass::Eval);
    assert!(out.semantic.is_none() && out.depth.is_some());
}

#[test]
fn save_load_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_model(4, true);
    // Non-default running statistics, so they are part of what must round-trip.
    {
        let _guard = tch::no_grad_guard();
        for (name, mut var) in model.vs.variables() {
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                var.copy_(&(Tensor::rand(var.size(), (Kind::Float, Device::Cpu)) + 0.5));
            }
        }
    }
    model.save(dir.path()).unwrap();
    let loaded = Model::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(loaded.spec, model.spec);
    let a = model.vs.variables();
    let b = loaded.vs.variables();
    assert_eq!(a.len(), b.len());
    for (name, tensor) in &a {
        assert!(
            tensor.equal(&b[name]),
            "tensor {name} differs after the round trip"
        );
    }
    // And saving the loaded model again gives the same bytes of YAML.
    let again = tempfile::tempdir().unwrap();
    loaded.save(again.path()).unwrap();
    let read = |d: &Path| std::fs::read_to_string(d.join("model.yaml")).unwrap();
    assert_eq!(read(dir.path()), read(again.path()));
}

#[test]
fn a_channels_last_model_saves_the_same_file_as_the_usual_layout() {
    let (nchw, nhwc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut model = common::tiny_model(4, true);
    model.save(nchw.path()).unwrap();
    model.use_channels_last();
    let weight = &model.vs.variables()["first_conv.weight"];
    assert!(
        !weight.is_contiguous(),
        "the weights are laid out channels-last"
    );
    model.save(nhwc.path()).unwrap();
    let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(read(nchw.path()) == read(nhwc.path()), "same bytes");
    let loaded = Model::load(nhwc.path(), Device::Cpu).unwrap();
    for (name, tensor) in model.vs.variables() {
        assert!(tensor.equal(&loaded.vs.variables()[&name]), "{name}");
    }
}

fn saved_tiny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_model(4, true).save(dir.path()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    Model::load(dir, Device::Cpu).unwrap_err().to_string()
}

fn edit_yaml(dir: &Path, edit: impl FnOnce(&mut ModelSpec)) {
    let mut spec = ModelSpec::load(dir).unwrap();
    edit(&mut spec);
    std::fs::write(
        dir.join("model.yaml"),
        serde_yaml::to_string(&spec).unwrap(),
    )
    .unwrap();
}

#[test]
fn missing_directory_and_files_are_named() {
    let e = load_error(Path::new("/nonexistent/model"));
    assert!(
        e.contains("/nonexistent/model") && e.contains("not a directory"),
        "{e}"
    );
    let dir = saved_tiny();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("weights file missing"),
        "{e}"
    );
    // Models are data: weights in any other format (a TorchScript or pickle file, which
    // could run code) are never looked at.
    let mut pickle = vec![0x80, 0x02];
    pickle.extend_from_slice(b"cos\nsystem\n(S'echo pwned'\ntR.");
    for name in ["model.pt", "model.pth", "model.ckpt", "model.bin"] {
        std::fs::write(dir.path().join(name), &pickle).unwrap();
    }
    let e = load_error(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("weights file missing"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("model.yaml")).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("model.yaml"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = saved_tiny();
    let path = dir.path().join("model.safetensors");
    let kept: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "heads.depth.s.weight")
        .collect();
    Tensor::write_safetensors(&kept, &path).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("`heads.depth.s.weight` is missing"),
        "{e}"
    );
}

#[test]
fn wrong_shape_and_class_count_are_named() {
    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| spec.architecture.growth_rate = Some(5));
    let e = load_error(dir.path());
    assert!(
        e.contains("has shape") && e.contains("the architecture needs"),
        "{e}"
    );

    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| {
        let classes = &mut spec.tasks.semantic.as_mut().unwrap().classes;
        classes.push(classes[0].clone());
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("class count mismatch")
            && e.contains("lists 5 classes")
            && e.contains("holds 4"),
        "{e}"
    );
}

#[test]
fn extra_tensor_is_named() {
    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| spec.tasks.depth = None);
    let e = load_error(dir.path());
    assert!(e.contains("unexpected tensor `heads.depth."), "{e}");
}

#[test]
fn bad_model_yaml_is_named() {
    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| {
        spec.architecture.preset = Some("fcdensenet99".into())
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("model.yaml") && e.contains("unknown preset `fcdensenet99`"),
        "{e}"
    );

    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| spec.input.height = 0);
    let e = load_error(dir.path());
    assert!(e.contains("native size 0x32"), "{e}");

    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| spec.architecture.dropout = Some(1.0));
    let e = load_error(dir.path());
    assert!(e.contains("dropout must be in (0, 1)"), "{e}");

    // Numbers that would make every output NaN or zero, not only wrong.
    for unit_m in [0.0, -1.0, f64::NAN] {
        let dir = saved_tiny();
        edit_yaml(dir.path(), |spec| {
            spec.tasks.depth.as_mut().unwrap().unit_m = unit_m
        });
        let e = load_error(dir.path());
        assert!(e.contains("tasks.depth.unit_m must be a positive"), "{e}");
    }
    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| spec.input.mean[1] = f32::NAN);
    let e = load_error(dir.path());
    assert!(e.contains("input.mean must be finite"), "{e}");
    let dir = saved_tiny();
    edit_yaml(dir.path(), |spec| spec.input.std[2] = f32::INFINITY);
    let e = load_error(dir.path());
    assert!(e.contains("input.std must be positive and finite"), "{e}");

    let dir = saved_tiny();
    let text = std::fs::read_to_string(dir.path().join("model.yaml")).unwrap();
    std::fs::write(
        dir.path().join("model.yaml"),
        text.replace("tasks:", "colour: red\ntasks:"),
    )
    .unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("unknown field `colour`"), "{e}");
}

#[test]
fn preset_fields_must_agree_with_the_preset() {
    let arch = Architecture {
        preset: Some("fcdensenet56".into()),
        growth_rate: Some(16),
        ..Default::default()
    };
    let e = arch.resolve().unwrap_err();
    assert!(
        e.contains("growth_rate") && e.contains("contradicts the preset"),
        "{e}"
    );
    let agreeing = Architecture {
        preset: Some("fcdensenet56".into()),
        growth_rate: Some(12),
        ..Default::default()
    };
    assert_eq!(agreeing.resolve().unwrap(), ArchConfig::fcdensenet56());
    let e = Architecture {
        preset: Some("custom".into()),
        ..Default::default()
    }
    .resolve()
    .unwrap_err();
    assert!(e.contains("first_conv_channels is missing"), "{e}");
}

/// A model.yaml naming a network of a billion-class size is refused from the shape alone,
/// before any weight is allocated (also a tiny shape with a huge layer count).
#[test]
fn hostile_architecture_sizes_are_refused_before_allocating() {
    for edit in [
        |a: &mut ArchConfig| a.growth_rate = 100_000,
        |a: &mut ArchConfig| a.first_conv_channels = 1 << 40,
        |a: &mut ArchConfig| a.bottleneck_layers = 1 << 50,
    ] {
        let dir = saved_tiny();
        edit_yaml(dir.path(), |spec| {
            let mut arch = spec.arch().unwrap();
            edit(&mut arch);
            spec.architecture = Architecture::from_config(None, &arch);
        });
        let err = load_error(dir.path());
        assert!(
            err.contains("weights, more than the 2e8 this build loads"),
            "{err}"
        );
    }
    // 65536 classes on the demo shape is large but allowed (heads of 2 x 65536 x 192).
    let mut spec = random_spec(
        ArchConfig::preset("fcdensenet56").unwrap(),
        None,
        3,
        true,
        32,
        32,
    );
    spec.tasks.semantic.as_mut().unwrap().classes = (0..65536)
        .map(|i| spec.tasks.semantic.as_ref().unwrap().classes[i % 3].clone())
        .collect();
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn an_oversized_model_yaml_or_params_file_is_refused_before_parsing() {
    let dir = saved_tiny();
    let path = dir.path().join("model.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text += &format!("# {}\n", "x".repeat(5 << 20));
    std::fs::write(&path, &text).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("model.yaml") && e.contains("larger than the 4 MiB"),
        "{e}"
    );

    let params = dir.path().join("params.yaml");
    std::fs::write(&params, "x".repeat(5 << 20)).unwrap();
    let e = bayes_perception::config::Params::load(&params, bayes_perception::config::ROOT_NODE)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("params.yaml") && e.contains("larger than the 4 MiB"),
        "{e}"
    );
}
