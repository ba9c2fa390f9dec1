//! Conversions between r2r's generated message types and the library's plain ones, field
//! by field (no logic).

use bayes_perception::msg::{self, Header, Time};
use bayes_perception::node::diagnostics::DiagnosticStatus;
use bayes_perception::node::params::{parameter_type, ParamValue};
use r2r::diagnostic_msgs::msg as diagnostic;
use r2r::rcl_interfaces::msg as rcl_msg;
use r2r::sensor_msgs::msg as sensor;
use r2r::std_msgs::msg as std_msgs;

/// A parameter value as rcl read it at start-up (params file, `-p`).
pub fn param_from_r2r(value: &r2r::ParameterValue) -> ParamValue {
    use r2r::ParameterValue as V;
    match value {
        V::Bool(b) => ParamValue::Bool(*b),
        V::Integer(i) => ParamValue::Integer(*i),
        V::Double(d) => ParamValue::Double(*d),
        V::String(s) => ParamValue::String(s.clone()),
        V::NotSet => ParamValue::Other(parameter_type::NOT_SET),
        V::ByteArray(_) => ParamValue::Other(parameter_type::BYTE_ARRAY),
        V::BoolArray(_) => ParamValue::Other(parameter_type::BOOL_ARRAY),
        V::IntegerArray(_) => ParamValue::Other(parameter_type::INTEGER_ARRAY),
        V::DoubleArray(_) => ParamValue::Other(parameter_type::DOUBLE_ARRAY),
        V::StringArray(_) => ParamValue::Other(parameter_type::STRING_ARRAY),
    }
}

pub fn result_to_msg(result: Result<(), String>) -> rcl_msg::SetParametersResult {
    rcl_msg::SetParametersResult {
        successful: result.is_ok(),
        reason: result.err().unwrap_or_default(),
    }
}

/// rcl_interfaces/ParameterValue by its type field.
pub fn param_from_msg(value: &rcl_msg::ParameterValue) -> ParamValue {
    match value.type_ {
        parameter_type::BOOL => ParamValue::Bool(value.bool_value),
        parameter_type::INTEGER => ParamValue::Integer(value.integer_value),
        parameter_type::DOUBLE => ParamValue::Double(value.double_value),
        parameter_type::STRING => ParamValue::String(value.string_value.clone()),
        other => ParamValue::Other(other),
    }
}

pub fn param_to_msg(value: ParamValue) -> rcl_msg::ParameterValue {
    let mut msg = rcl_msg::ParameterValue {
        type_: value.type_id(),
        ..Default::default()
    };
    match value {
        ParamValue::Bool(b) => msg.bool_value = b,
        ParamValue::Integer(i) => msg.integer_value = i,
        ParamValue::Double(d) => msg.double_value = d,
        ParamValue::String(s) => msg.string_value = s,
        ParamValue::Other(_) => {}
    }
    msg
}

pub fn header_from_ros(header: &std_msgs::Header) -> Header {
    Header {
        stamp: Time {
            sec: header.stamp.sec,
            nanosec: header.stamp.nanosec,
        },
        frame_id: header.frame_id.clone(),
    }
}

pub fn header_to_ros(header: &Header) -> std_msgs::Header {
    std_msgs::Header {
        stamp: r2r::builtin_interfaces::msg::Time {
            sec: header.stamp.sec,
            nanosec: header.stamp.nanosec,
        },
        frame_id: header.frame_id.clone(),
    }
}

pub fn image_from_ros(image: sensor::Image) -> msg::Image {
    msg::Image {
        header: header_from_ros(&image.header),
        height: image.height,
        width: image.width,
        encoding: image.encoding,
        is_bigendian: image.is_bigendian,
        step: image.step,
        data: image.data,
    }
}

pub fn image_to_ros(image: msg::Image) -> sensor::Image {
    sensor::Image {
        header: header_to_ros(&image.header),
        height: image.height,
        width: image.width,
        encoding: image.encoding,
        is_bigendian: image.is_bigendian,
        step: image.step,
        data: image.data,
    }
}

pub fn compressed_image_to_ros(image: msg::CompressedImage) -> sensor::CompressedImage {
    sensor::CompressedImage {
        header: header_to_ros(&image.header),
        format: image.format,
        data: image.data,
    }
}

/// Fixed-size arrays arrive with their sizes; anything else reads as zeros.
pub fn fixed<const N: usize>(values: &[f64]) -> [f64; N] {
    values.try_into().unwrap_or([0.0; N])
}

pub fn camera_info_from_ros(info: sensor::CameraInfo) -> msg::CameraInfo {
    msg::CameraInfo {
        header: header_from_ros(&info.header),
        height: info.height,
        width: info.width,
        distortion_model: info.distortion_model,
        d: info.d,
        k: fixed(&info.k),
        r: fixed(&info.r),
        p: fixed(&info.p),
        binning_x: info.binning_x,
        binning_y: info.binning_y,
        roi: msg::RegionOfInterest {
            x_offset: info.roi.x_offset,
            y_offset: info.roi.y_offset,
            height: info.roi.height,
            width: info.roi.width,
            do_rectify: info.roi.do_rectify,
        },
    }
}

pub fn camera_info_to_ros(info: msg::CameraInfo) -> sensor::CameraInfo {
    sensor::CameraInfo {
        header: header_to_ros(&info.header),
        height: info.height,
        width: info.width,
        distortion_model: info.distortion_model,
        d: info.d,
        k: info.k.to_vec(),
        r: info.r.to_vec(),
        p: info.p.to_vec(),
        binning_x: info.binning_x,
        binning_y: info.binning_y,
        roi: sensor::RegionOfInterest {
            x_offset: info.roi.x_offset,
            y_offset: info.roi.y_offset,
            height: info.roi.height,
            width: info.roi.width,
            do_rectify: info.roi.do_rectify,
        },
    }
}

pub fn point_cloud_to_ros(cloud: msg::PointCloud2) -> sensor::PointCloud2 {
    sensor::PointCloud2 {
        header: header_to_ros(&cloud.header),
        height: cloud.height,
        width: cloud.width,
        fields: cloud
            .fields
            .into_iter()
            .map(|f| sensor::PointField {
                name: f.name,
                offset: f.offset,
                datatype: f.datatype,
                count: f.count,
            })
            .collect(),
        is_bigendian: cloud.is_bigendian,
        point_step: cloud.point_step,
        row_step: cloud.row_step,
        data: cloud.data,
        is_dense: cloud.is_dense,
    }
}

pub fn status_to_ros(status: DiagnosticStatus) -> diagnostic::DiagnosticStatus {
    diagnostic::DiagnosticStatus {
        level: status.level as u8,
        name: status.name,
        message: status.message,
        hardware_id: status.hardware_id,
        values: status
            .values
            .into_iter()
            .map(|(key, value)| diagnostic::KeyValue { key, value })
            .collect(),
    }
}
