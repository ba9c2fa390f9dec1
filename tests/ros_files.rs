//! The ROS packaging files read as text: params file, launch file, RViz config,
//! package.xml and Cargo metadata must agree with the parameters and topics in the code.

use std::collections::BTreeSet;
use std::path::Path;

use bayes_perception::config::Params;
use bayes_perception::msg::outputs::{OutputTopic, POINTS_TOPIC};
use bayes_perception::node::params::{declared, ROS_RESERVED};

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_leaf_names(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                let k = k.as_str().unwrap();
                yaml_leaf_names(
                    &if prefix.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    },
                    v,
                    out,
                );
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The string literal right after each `marker` in `text` (whitespace allowed between),
/// e.g. the keys of `overrides["..."]` or the names of `DeclareLaunchArgument("...")`.
fn quoted_after(text: &str, marker: &str) -> Vec<String> {
    text.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = text[i + marker.len()..].trim_start().strip_prefix('"')?;
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn every_node_parameter_is_in_the_params_file_and_vice_versa() {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read("config/params.yaml")).unwrap();
    let mut in_file = BTreeSet::new();
    yaml_leaf_names("", &doc["/**"]["ros__parameters"], &mut in_file);
    let read_by_node: BTreeSet<String> = declared(&Params::default())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(in_file, read_by_node);
}

#[test]
fn launch_file_sets_only_declared_parameters_and_declares_the_documented_arguments() {
    let launch = read("launch/perception.launch.py");
    let declared_names: BTreeSet<String> = declared(&Params::default())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let set_by_launch = quoted_after(&launch, "overrides[");
    assert!(!set_by_launch.is_empty());
    for key in &set_by_launch {
        assert!(
            declared_names.contains(key) || ROS_RESERVED.contains(&key.as_str()),
            "launch sets unknown parameter {key}"
        );
    }
    let arguments: BTreeSet<String> = quoted_after(&launch, "DeclareLaunchArgument(")
        .into_iter()
        .collect();
    for required in [
        "params_file",
        "model",
        "image",
        "namespace",
        "mode",
        "use_sim_time",
        "rviz",
    ] {
        assert!(
            arguments.contains(required),
            "launch argument {required} missing: {arguments:?}"
        );
    }
    assert!(launch.contains("executable=\"bayes_perception_node\""));
    // The remapped names are the ones the node subscribes to.
    for topic in ["(\"image\",", "(\"image/compressed\",", "(\"camera_info\","] {
        assert!(launch.contains(topic), "remapping {topic} missing");
    }
}

#[test]
fn rviz_config_shows_the_camera_labels_depth_four_uncertainty_images_and_the_cloud() {
    let rviz = read("rviz/bayes_perception.rviz");
    let topics: BTreeSet<String> = rviz
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Value: /"))
        .map(|t| t.to_owned())
        .collect();
    let outputs: BTreeSet<&str> = OutputTopic::ALL
        .iter()
        .map(|t| t.name())
        .chain([POINTS_TOPIC])
        .collect();
    for t in &topics {
        assert!(
            t.starts_with("camera/") || outputs.contains(t.as_str()),
            "RViz shows unknown topic /{t}"
        );
    }
    for wanted in [
        OutputTopic::SemanticColor,
        OutputTopic::Depth,
        OutputTopic::SemanticAleatoricColor,
        OutputTopic::SemanticEpistemicColor,
        OutputTopic::DepthAleatoricColor,
        OutputTopic::DepthEpistemicColor,
    ] {
        assert!(
            topics.contains(wanted.name()),
            "RViz lacks {}",
            wanted.name()
        );
    }
    assert!(topics.contains("camera/image_raw"));
    // The cloud, coloured by a field the cloud has (its intensity channel).
    assert!(topics.contains(POINTS_TOPIC));
    assert!(rviz.contains("Class: rviz_default_plugins/PointCloud2"));
    let channel = rviz
        .lines()
        .find_map(|l| l.trim().strip_prefix("Channel Name: "))
        .unwrap();
    assert_eq!(channel, "depth_aleatoric");
    assert!(bayes_perception::points::fields()
        .iter()
        .any(|f| f.name == channel));
}

#[test]
fn package_xml_and_cargo_metadata_agree() {
    let xml = read("package.xml");
    let cargo: toml_like::Cargo = toml_like::parse(&read("Cargo.toml"));
    assert!(xml.contains("<package format=\"3\">"));
    assert!(xml.contains(&format!("<name>{}</name>", cargo.name)));
    assert!(xml.contains(&format!("<version>{}</version>", cargo.version)));
    assert!(xml.contains("<build_type>ament_cargo</build_type>"));
    for dep in [
        "sensor_msgs",
        "std_msgs",
        "diagnostic_msgs",
        "builtin_interfaces",
        "rosgraph_msgs",
        "launch_ros",
        "rviz2",
    ] {
        assert!(xml.contains(&format!(">{dep}<")), "package.xml lacks {dep}");
    }
    for dir in ["launch", "config", "rviz"] {
        assert!(
            cargo.install_to_share.contains(&dir.to_owned()),
            "{dir} not installed to share"
        );
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).is_dir());
    }
}

/// Just enough of Cargo.toml for the test above (no TOML parser dependency).
mod toml_like {
    pub struct Cargo {
        pub name: String,
        pub version: String,
        pub install_to_share: Vec<String>,
    }

    fn value(text: &str, key: &str) -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap();
        line.split('"').nth(1).unwrap().to_owned()
    }

    pub fn parse(text: &str) -> Cargo {
        let share = text
            .lines()
            .find(|l| l.starts_with("install_to_share = "))
            .unwrap();
        Cargo {
            name: value(text, "name"),
            version: value(text, "version"),
            install_to_share: share
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect(),
        }
    }
}
