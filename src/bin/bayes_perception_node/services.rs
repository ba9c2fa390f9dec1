//! The rcl_interfaces parameter services and `/parameter_events`, answered from the
//! library's [`ParamServer`](bayes_perception::node::params::ParamServer): this file only
//! converts requests and replies.

use std::sync::Arc;

use anyhow::Context as _;
use bayes_perception::msg::Header;
use bayes_perception::node::params::{Change, Descriptor, ParamValue};
use futures::StreamExt;
use r2r::rcl_interfaces::{msg as rcl_msg, srv as rcl_srv};
use r2r::QosProfile;

use super::convert::{header_to_ros, param_from_msg, param_to_msg, result_to_msg};
use super::{ros_log, ros_now, Glue};

/// Serves the six rcl_interfaces parameter services from the library's [`ParamServer`];
/// each set that changed parameters comes out of the returned channel, in the order the
/// sets were made, with the values it set.
pub fn serve_parameters(
    node: &mut r2r::Node,
    glue: &Arc<Glue>,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<Vec<Change>>> {
    use rcl_srv::*;
    let (changes, changed) = tokio::sync::mpsc::unbounded_channel();
    // Sent under the parameters' lock: a later set cannot overtake it.
    if !glue.state.params.announce_changes(move |c| {
        changes.send(c).ok();
    }) {
        anyhow::bail!("the parameter services are served once");
    }
    let request = |ps: &[rcl_msg::Parameter]| -> Vec<(String, ParamValue)> {
        ps.iter()
            .map(|p| (p.name.clone(), param_from_msg(&p.value)))
            .collect()
    };
    let g = glue.clone();
    serve::<SetParameters::Service>(node, glue, "set_parameters", move |req| {
        let outcome = g.state.params.set_each(&request(&req.parameters));
        let results = outcome.results.into_iter().map(result_to_msg).collect();
        SetParameters::Response { results }
    })?;
    let g = glue.clone();
    serve::<SetParametersAtomically::Service>(
        node,
        glue,
        "set_parameters_atomically",
        move |req| {
            let outcome = g.state.params.set_atomically(&request(&req.parameters));
            let result = outcome.map(|_| ());
            SetParametersAtomically::Response {
                result: result_to_msg(result),
            }
        },
    )?;
    let g = glue.clone();
    serve::<GetParameters::Service>(node, glue, "get_parameters", move |req| {
        let values = g.state.params.read(|s| {
            let value = |n: &String| s.get(n).unwrap_or(ParamValue::Other(0));
            req.names.iter().map(|n| param_to_msg(value(n))).collect()
        });
        GetParameters::Response { values }
    })?;
    let g = glue.clone();
    serve::<GetParameterTypes::Service>(node, glue, "get_parameter_types", move |req| {
        let types = g
            .state
            .params
            .read(|s| req.names.iter().map(|n| s.describe(n).type_id).collect());
        GetParameterTypes::Response { types }
    })?;
    let g = glue.clone();
    serve::<DescribeParameters::Service>(node, glue, "describe_parameters", move |req| {
        let describe = |d: Descriptor| rcl_msg::ParameterDescriptor {
            name: d.name,
            type_: d.type_id,
            description: d.description,
            read_only: d.read_only,
            // Step 0: any value in the range.
            integer_range: d
                .integer_range
                .map(|(from_value, to_value)| rcl_msg::IntegerRange {
                    from_value,
                    to_value,
                    step: 0,
                })
                .into_iter()
                .collect(),
            floating_point_range: d
                .float_range
                .map(|(from_value, to_value)| rcl_msg::FloatingPointRange {
                    from_value,
                    to_value,
                    step: 0.0,
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let descriptors = g
            .state
            .params
            .read(|s| req.names.iter().map(|n| describe(s.describe(n))).collect());
        DescribeParameters::Response { descriptors }
    })?;
    let g = glue.clone();
    serve::<ListParameters::Service>(node, glue, "list_parameters", move |req| {
        let (names, prefixes) = g.state.params.read(|s| s.list(&req.prefixes, req.depth));
        ListParameters::Response {
            result: rcl_msg::ListParametersResult { names, prefixes },
        }
    })?;
    Ok(changed)
}

/// The service `<node name>/<service>`, answered by `handle` on a tokio task.
fn serve<T>(
    node: &mut r2r::Node,
    glue: &Arc<Glue>,
    service: &str,
    handle: impl Fn(T::Request) -> T::Response + Send + 'static,
) -> anyhow::Result<()>
where
    T: r2r::WrappedServiceTypeSupport + 'static,
{
    let full = format!("{}/{service}", node.name()?);
    // rclcpp's QoS for parameter services (keep last 1000, where the default keeps 10).
    let mut requests = node
        .create_service::<T>(&full, QosProfile::parameters())
        .with_context(|| format!("cannot create the {full} service"))?;
    let logger = glue.logger.clone();
    glue.runtime.spawn(async move {
        while let Some(request) = requests.next().await {
            let response = handle(request.message.clone());
            match request.respond(response) {
                Ok(()) => {}
                // The client has not discovered the reply's writer yet (a DDS race of new
                // clients); rclcpp warns about this case too.
                Err(r2r::Error::RCL_RET_TIMEOUT) => ros_log(
                    &logger,
                    r2r::LogSeverity::Warn,
                    &format!("answering {full}: the client did not take the reply in time"),
                ),
                Err(e) => ros_log(
                    &logger,
                    r2r::LogSeverity::Error,
                    &format!("answering {full}: {e}"),
                ),
            }
        }
    });
    Ok(())
}

/// rcl_interfaces/ParameterEvent for the parameters a service request changed, with the
/// values it set.
pub fn publish_parameter_event(
    glue: &Glue,
    publisher: &r2r::Publisher<rcl_msg::ParameterEvent>,
    node: &str,
    changed: &[Change],
) {
    let changed_parameters = changed
        .iter()
        .map(|(name, value)| rcl_msg::Parameter {
            name: name.clone(),
            value: param_to_msg(value.clone()),
        })
        .collect();
    let stamp = ros_now(&glue.clock).unwrap_or_default();
    let event = rcl_msg::ParameterEvent {
        stamp: header_to_ros(&Header {
            stamp,
            frame_id: String::new(),
        })
        .stamp,
        node: node.to_owned(),
        changed_parameters,
        ..Default::default()
    };
    if let Err(e) = publisher.publish(&event) {
        ros_log(
            &glue.logger,
            r2r::LogSeverity::Error,
            &format!("publishing /parameter_events: {e}"),
        );
    }
}
