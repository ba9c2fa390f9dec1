//! `ros2msg` message definitions, as rosbag2 embeds them in MCAP schemas: the type's own
//! definition, then each dependency after a line of 80 `=` and a `MSG: pkg/Type` line, so
//! that generic MCAP tools can decode the CDR payloads without a ROS installation.

const TIME: &str = "int32 sec\nuint32 nanosec\n";
const HEADER: &str = "builtin_interfaces/Time stamp\nstring frame_id\n";
const REGION_OF_INTEREST: &str =
    "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\nbool do_rectify\n";
const IMAGE: &str = "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n";
const COMPRESSED_IMAGE: &str = "std_msgs/Header header\nstring format\nuint8[] data\n";
const POINT_FIELD: &str = "uint8 INT8 = 1\nuint8 UINT8 = 2\nuint8 INT16 = 3\nuint8 UINT16 = 4\nuint8 INT32 = 5\nuint8 UINT32 = 6\nuint8 FLOAT32 = 7\nuint8 FLOAT64 = 8\nstring name\nuint32 offset\nuint8 datatype\nuint32 count\n";
const POINT_CLOUD2: &str = "std_msgs/Header header\nuint32 height\nuint32 width\nsensor_msgs/PointField[] fields\nbool is_bigendian\nuint32 point_step\nuint32 row_step\nuint8[] data\nbool is_dense\n";
const CAMERA_INFO: &str = "std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\nfloat64[] d\nfloat64[9] k\nfloat64[9] r\nfloat64[12] p\nuint32 binning_x\nuint32 binning_y\nsensor_msgs/RegionOfInterest roi\n";

/// The full `ros2msg` definition of a type this project writes, or `None` for others.
pub fn definition(type_name: &str) -> Option<String> {
    let (own, deps): (&str, &[(&str, &str)]) = match type_name {
        "sensor_msgs/msg/Image" => (
            IMAGE,
            &[
                ("std_msgs/Header", HEADER),
                ("builtin_interfaces/Time", TIME),
            ],
        ),
        "sensor_msgs/msg/CompressedImage" => (
            COMPRESSED_IMAGE,
            &[
                ("std_msgs/Header", HEADER),
                ("builtin_interfaces/Time", TIME),
            ],
        ),
        "sensor_msgs/msg/CameraInfo" => (
            CAMERA_INFO,
            &[
                ("std_msgs/Header", HEADER),
                ("builtin_interfaces/Time", TIME),
                ("sensor_msgs/RegionOfInterest", REGION_OF_INTEREST),
            ],
        ),
        "sensor_msgs/msg/PointCloud2" => (
            POINT_CLOUD2,
            &[
                ("std_msgs/Header", HEADER),
                ("builtin_interfaces/Time", TIME),
                ("sensor_msgs/PointField", POINT_FIELD),
            ],
        ),
        _ => return None,
    };
    let mut text = own.to_owned();
    for (name, body) in deps {
        text.push_str(&"=".repeat(80));
        text.push_str(&format!("\nMSG: {name}\n{body}"));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_list_their_dependencies() {
        let image = definition("sensor_msgs/msg/Image").unwrap();
        assert!(image.starts_with("std_msgs/Header header\n"));
        assert!(image.contains(&format!("{}\nMSG: std_msgs/Header\n", "=".repeat(80))));
        assert!(image.contains("MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"));
        assert!(definition("sensor_msgs/msg/CameraInfo")
            .unwrap()
            .contains("MSG: sensor_msgs/RegionOfInterest\n"));
        assert!(definition("std_msgs/msg/String").is_none());
    }
}
