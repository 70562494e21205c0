//! Where the tch (libtorch) stages run: `auto` picks CUDA when libtorch sees a GPU.
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

/// What the user asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceRequest::Cuda(i)),
                _ => Err(format!("unknown device '{s}': use auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

pub fn cuda_device_count() -> usize {
    if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 }
}

impl DeviceRequest {
    /// Resolves the request against this machine; asking for CUDA without a GPU is an error,
    /// not a silent fallback.
    pub fn resolve(self) -> Result<Device, String> {
        match self {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Auto => Ok(if cuda_device_count() > 0 { Device::Cuda(0) } else { Device::Cpu }),
            DeviceRequest::Cuda(i) => {
                let n = cuda_device_count();
                if i < n {
                    Ok(Device::Cuda(i))
                } else if n == 0 {
                    Err("--device cuda: libtorch sees no CUDA device here (use --device cpu or auto)".into())
                } else {
                    Err(format!("--device cuda:{i}: only {n} CUDA device(s) present"))
                }
            }
        }
    }
}

impl Device {
    pub fn tch(self) -> tch::Device {
        match self {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
