//! Where the tch (libtorch) stages run (`auto` picks CUDA when libtorch sees a GPU), and in
//! which floating-point precision their ViT backbones compute.
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
                    Err(format!("--device cuda:{i}: libtorch sees no CUDA device here (use --device cpu or auto)"))
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

/// The element type of the networks' ViT backbones (`--precision`, `--sam-precision`): SAM's
/// image encoder, DINOv2 and the PEM's feature extractor. What follows them (mask decoding,
/// scoring, point matching, pose solving) stays f32: the PEM's coarse matching picks among
/// near-tied hypotheses, and bf16 there changes which one wins (cli-tests/pem_e2e.rs).
/// bf16 runs on CPUs too and is faster than f32 where they have bf16 dot products
/// (AVX512-BF16 or AMX); f16 needs CUDA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            _ => Err(format!("unknown precision '{s}': use f32, bf16 or f16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::F32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
            Precision::F16 => tch::Kind::Half,
        }
    }

    /// Whether `device` can run it: libtorch's CPU kernels lack half precision.
    pub fn check(self, device: Device) -> Result<(), String> {
        if self == Precision::F16 && device == Device::Cpu {
            return Err("f16 needs a CUDA device (libtorch's CPU kernels lack half precision): use f32 or bf16 on the CPU".into());
        }
        Ok(())
    }
}
