//! The params file as ROS 2 parameters: dotted names (`mc.samples`), typed values, and the
//! rules for changing them while the node runs (`ros2 param set`).
//!
//! Every key of [`Params`] is one ROS parameter; the r2r layer declares exactly
//! [`declared`] and routes every set request through [`apply`], so the node validates a
//! live change with the same checks as the params file.

use crate::config::Params;

/// A ROS 2 parameter value (the scalar kinds our parameters use).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
}

impl ParamValue {
    fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "bool",
            ParamValue::Integer(_) => "integer",
            ParamValue::Double(_) => "double",
            ParamValue::String(_) => "string",
        }
    }

    fn to_yaml(&self) -> serde_yaml::Value {
        match self {
            ParamValue::Bool(b) => (*b).into(),
            ParamValue::Integer(i) => (*i).into(),
            ParamValue::Double(d) => (*d).into(),
            ParamValue::String(s) => s.clone().into(),
        }
    }

    fn from_yaml(value: &serde_yaml::Value) -> Option<Self> {
        match value {
            serde_yaml::Value::Bool(b) => Some(ParamValue::Bool(*b)),
            serde_yaml::Value::Number(n) if n.is_f64() => n.as_f64().map(ParamValue::Double),
            serde_yaml::Value::Number(n) => n.as_i64().map(ParamValue::Integer),
            serde_yaml::Value::String(s) => Some(ParamValue::String(s.clone())),
            _ => None,
        }
    }
}

/// Parameters the ROS client library itself sets; the node leaves them to it.
pub const ROS_RESERVED: &[&str] = &["use_sim_time", "start_type_description_service"];

/// Parameters that only take effect at start-up; `ros2 param set` on them is rejected.
pub const RESTART_ONLY: &[&str] = &["model", "device", "cpu_threads", "input.transport"];

/// Every parameter the node declares, with its value in `params`, in file order.
pub fn declared(params: &Params) -> Vec<(String, ParamValue)> {
    let value = serde_yaml::to_value(params).expect("Params serialise to YAML");
    let mut out = Vec::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut Vec<(String, ParamValue)>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                let key = key.as_str().expect("Params keys are strings");
                let name = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, value, out);
            }
        }
        leaf => out.push((
            prefix.to_owned(),
            ParamValue::from_yaml(leaf).expect("Params leaves are scalars"),
        )),
    }
}

/// `params` with parameter `name` set to `value`, validated as a whole. The error is the
/// reason given back to `ros2 param set`.
pub fn apply(params: &Params, name: &str, value: &ParamValue) -> Result<Params, String> {
    let mut tree = serde_yaml::to_value(params).expect("Params serialise to YAML");
    set_in_tree(&mut tree, name, value)?;
    from_tree(tree)
}

/// Sets one typed leaf of the YAML form of [`Params`].
fn set_in_tree(tree: &mut serde_yaml::Value, name: &str, value: &ParamValue) -> Result<(), String> {
    let mut slot = tree;
    for part in name.split('.') {
        slot = slot
            .as_mapping_mut()
            .and_then(|m| m.get_mut(part))
            .ok_or_else(|| format!("unknown parameter `{name}`"))?;
    }
    let current = ParamValue::from_yaml(slot)
        .ok_or_else(|| format!("`{name}` is a group, not a parameter"))?;
    if std::mem::discriminant(&current) != std::mem::discriminant(value) {
        let hint = if matches!(current, ParamValue::Double(_)) {
            " (write reals with a decimal point, e.g. 1.0)"
        } else {
            ""
        };
        return Err(format!(
            "`{name}` is a {} parameter, got a {}{hint}",
            current.type_name(),
            value.type_name()
        ));
    }
    *slot = value.to_yaml();
    Ok(())
}

fn from_tree(tree: serde_yaml::Value) -> Result<Params, String> {
    let params: Params = serde_path_to_error::deserialize(tree)
        .map_err(|e| format!("`{}`: {}", e.path(), e.inner()))?;
    params.validate("parameter").map_err(|e| e.to_string())?;
    Ok(params)
}

/// Checks that a running node may change `name`.
pub fn check_runtime_change(name: &str) -> Result<(), String> {
    if RESTART_ONLY.contains(&name) || ROS_RESERVED.contains(&name) {
        return Err(format!(
            "`{name}` only takes effect at start-up; restart the node to change it"
        ));
    }
    Ok(())
}

/// The node's parameters from what the ROS client library read (params file, `-p`),
/// starting from the defaults. All values are set first and checked together, so the order
/// of the file does not matter (a depth range moved up entirely is fine). Unknown names
/// are errors, except the client library's own.
pub fn from_ros<'a>(
    values: impl IntoIterator<Item = (&'a str, ParamValue)>,
) -> Result<Params, String> {
    let mut tree = serde_yaml::to_value(Params::default()).expect("Params serialise to YAML");
    for (name, value) in values {
        if ROS_RESERVED.contains(&name) || name.starts_with("qos_overrides.") {
            continue;
        }
        set_in_tree(&mut tree, name, &value)?;
    }
    from_tree(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Reliability};

    #[test]
    fn declared_names_are_dotted_and_typed() {
        let names: Vec<(String, ParamValue)> = declared(&Params::default());
        let get = |n: &str| names.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("mode"), Some(ParamValue::String("aleatoric".into())));
        assert_eq!(get("mc.samples"), Some(ParamValue::Integer(50)));
        assert_eq!(get("colormap.depth_max_m"), Some(ParamValue::Double(50.0)));
        assert_eq!(
            get("qos.input_reliability"),
            Some(ParamValue::String("best_effort".into()))
        );
        assert_eq!(
            get("diagnostics.latency_warn_ms"),
            Some(ParamValue::Double(1000.0))
        );
        assert!(names
            .iter()
            .all(|(k, _)| !k.is_empty() && !k.starts_with('.')));
        for name in RESTART_ONLY {
            assert!(get(name).is_some(), "{name} is not a parameter");
        }
    }

    #[test]
    fn live_updates_apply_and_invalid_ones_are_rejected_with_a_reason() {
        let p = Params::default();
        let p = apply(&p, "mode", &ParamValue::String("mc".into())).unwrap();
        assert_eq!(p.mode, Mode::Mc);
        let p = apply(&p, "mc.samples", &ParamValue::Integer(12)).unwrap();
        assert_eq!(p.mc.samples, 12);
        let p = apply(
            &p,
            "qos.output_reliability",
            &ParamValue::String("best_effort".into()),
        )
        .unwrap();
        assert_eq!(p.qos.output_reliability, Reliability::BestEffort);

        let reason = apply(&p, "mc.samples", &ParamValue::Integer(1)).unwrap_err();
        assert!(
            reason.contains("mc.samples") && reason.contains("at least 2"),
            "{reason}"
        );
        let reason = apply(&p, "mode", &ParamValue::String("turbo".into())).unwrap_err();
        assert!(
            reason.contains("mode") && reason.contains("aleatoric"),
            "{reason}"
        );
        let reason = apply(&p, "colormap.depth_max_m", &ParamValue::Integer(80)).unwrap_err();
        assert!(
            reason.contains("double") && reason.contains("1.0"),
            "{reason}"
        );
        let reason = apply(&p, "mc.sample", &ParamValue::Integer(3)).unwrap_err();
        assert!(reason.contains("unknown parameter `mc.sample`"), "{reason}");
        let reason = apply(&p, "mc", &ParamValue::Integer(3)).unwrap_err();
        assert!(reason.contains("group"), "{reason}");
        let reason = apply(&p, "device", &ParamValue::String("gpu".into())).unwrap_err();
        assert!(
            reason.contains("expected auto, cpu, cuda or cuda:N"),
            "{reason}"
        );
    }

    #[test]
    fn restart_only_parameters_are_refused_at_runtime() {
        for name in RESTART_ONLY.iter().chain(ROS_RESERVED) {
            let reason = check_runtime_change(name).unwrap_err();
            assert!(reason.contains("restart"), "{reason}");
        }
        for name in [
            "mode",
            "mc.samples",
            "colormap.depth_max_m",
            "qos.input_reliability",
        ] {
            check_runtime_change(name).unwrap();
        }
    }

    #[test]
    fn start_up_values_from_ros() {
        let values = [
            ("use_sim_time", ParamValue::Bool(true)),
            ("model", ParamValue::String("/opt/models/camvid".into())),
            ("mc.samples", ParamValue::Integer(20)),
            (
                "qos_overrides./image.subscription.reliability",
                ParamValue::String("reliable".into()),
            ),
        ];
        let p = from_ros(values.iter().map(|(k, v)| (*k, v.clone()))).unwrap();
        assert_eq!(p.model, "/opt/models/camvid");
        assert_eq!(p.mc.samples, 20);
        let e = from_ros([("mcsamples", ParamValue::Integer(3))]).unwrap_err();
        assert!(e.contains("unknown parameter `mcsamples`"), "{e}");
        // Checked as a whole: a depth range above the default maximum, minimum first.
        let p = from_ros([
            ("colormap.depth_min_m", ParamValue::Double(60.0)),
            ("colormap.depth_max_m", ParamValue::Double(100.0)),
        ])
        .unwrap();
        assert_eq!(
            (p.colormap.depth_min_m, p.colormap.depth_max_m),
            (60.0, 100.0)
        );
        let e = from_ros([
            ("mode", ParamValue::String("mc".into())),
            ("mc.samples", ParamValue::Integer(1)),
        ])
        .unwrap_err();
        assert!(e.contains("mc.samples"), "{e}");
    }

    #[test]
    fn every_declared_parameter_round_trips_through_apply() {
        let p = Params::default();
        for (name, value) in declared(&p) {
            assert_eq!(apply(&p, &name, &value).unwrap(), p, "{name}");
        }
    }
}
