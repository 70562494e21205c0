//! Draws a [`VizScene`] with kiss3d (wgpu): offscreen into an image, or in an interactive
//! window. kiss3d panics where it cannot get a GPU adapter or a window; we check for both
//! first and also turn any panic inside it into an error, so the CLI never panics.
//!
//! kiss3d's world is OpenGL-like (y up, the camera looks down −z); ours is OpenCV (y down,
//! z forward). Everything crosses over through `gl`: (x, y, z) → (x, −y, −z), a rotation
//! (det +1), so model poses stay rigid.
use super::results::FrameRecord;
use super::scene::{View, ViewKind, VizScene};
use crate::geometry::Vec3 as CvVec3;
use anyhow::Context;
use kiss3d::camera::{Camera3d, OrbitCamera3d};
use kiss3d::color::Color;
use kiss3d::event::{Action, Key, WindowEvent};
use kiss3d::glamx::{Mat3, Mat4, Pose3, Quat, Vec2, Vec3};
use kiss3d::light::Light;
use kiss3d::post_processing::Tonemap;
use kiss3d::resource::GpuMesh3d;
use kiss3d::scene::SceneNode3d;
use kiss3d::text::Font;
use kiss3d::window::{Canvas, OffscreenSurface, Window};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

const BACKGROUND: Color = Color::new(0.12, 0.12, 0.14, 1.0);

fn gl(p: &CvVec3) -> Vec3 {
    Vec3::new(p.x, -p.y, -p.z)
}

/// Runs `f`, turning a panic inside kiss3d/wgpu into an error (and keeping its message off
/// stderr: the caller reports it once, as an error).
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|p| {
        let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
        anyhow::anyhow!("{what} failed: {}", msg.unwrap_or_else(|| "unknown error in the renderer".into()))
    })
}

/// Finds a graphics adapter: Vulkan (or the platform's native API) first, OpenGL/EGL only
/// if there is none (probing EGL makes Mesa complain on stderr in a headless session).
/// WGPU_BACKEND (e.g. `gl`, `vulkan`) picks the API explicitly. kiss3d would panic without
/// an adapter; this says what to install instead.
fn find_adapter() -> anyhow::Result<(wgpu::Instance, wgpu::Adapter)> {
    // Mesa's device-select Vulkan layer connects to Wayland to rank GPUs, and without a session
    // (CI, Xvfb, ssh) libwayland prints "error: XDG_RUNTIME_DIR is invalid": harmless, but it
    // reads like ours. wgpu ranks adapters itself, so the layer is switched off then. Safe:
    // nothing else runs yet (single-threaded; the scene loaders use no threads).
    let session = ["WAYLAND_DISPLAY", "XDG_RUNTIME_DIR"].iter().any(|v| std::env::var_os(v).is_some());
    if !session && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let tries = match wgpu::Backends::from_env() {
        Some(b) => vec![b],
        None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL],
    };
    let mut errors = Vec::new();
    for backends in tries {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor { backends, ..wgpu::InstanceDescriptor::new_without_display_handle() });
        let options = wgpu::RequestAdapterOptions { compatible_surface: None, ..Default::default() };
        match kiss3d::pollster::block_on(instance.request_adapter(&options)) {
            Ok(adapter) => {
                let info = adapter.get_info();
                tracing::info!("rendering on {} ({:?})", info.name, info.backend);
                return Ok((instance, adapter));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    anyhow::bail!(
        "no graphics adapter to render with ({}): install a Vulkan or OpenGL driver; without a GPU, \
         Mesa's software Vulkan (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)",
        errors.join("; ")
    )
}

/// Sets up kiss3d's wgpu context for offscreen rendering on the adapter we chose (kiss3d
/// reuses an existing context instead of probing every backend itself).
fn init_headless_context() -> anyhow::Result<()> {
    let (instance, adapter) = find_adapter()?;
    let descriptor = wgpu::DeviceDescriptor { label: Some("sam6d viz"), required_limits: adapter.limits(), ..Default::default() };
    let (device, queue) = kiss3d::pollster::block_on(adapter.request_device(&descriptor)).context("opening the graphics device")?;
    // kiss3d's own headless choice: a plain 8-bit target, gamma applied in its shaders.
    kiss3d::context::Context::init(instance, device, queue, adapter, wgpu::TextureFormat::Rgba8Unorm);
    Ok(())
}

/// kiss3d lights and blends in linear RGB and encodes to sRGB on output; image bytes and our
/// score colours are sRGB, so they are decoded first to come out as they went in.
fn linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn srgb_color(r: f32, g: f32, b: f32) -> Color {
    Color::new(linear(r), linear(g), linear(b), 1.0)
}

/// A fixed pinhole camera: the [`View`]'s pose and exact intrinsics (principal point
/// included), which kiss3d's own cameras cannot express.
struct PinholeCamera {
    view: Pose3,
    proj: Mat4,
    eye: Vec3,
    clip: (f32, f32),
}

impl PinholeCamera {
    fn new(v: &View) -> PinholeCamera {
        let (w, h) = (v.width as f32, v.height as f32);
        let (n, f) = (v.near, v.far);
        // Pixel (u, v) with centres at integers covers [u, u+1] in window coordinates; depth
        // maps to wgpu's [0, 1] (near → 0).
        let rows = [
            [2.0 * v.fx / w, 0.0, 1.0 - 2.0 * (v.cx + 0.5) / w, 0.0],
            [0.0, 2.0 * v.fy / h, 2.0 * (v.cy + 0.5) / h - 1.0, 0.0],
            [0.0, 0.0, f / (n - f), n * f / (n - f)],
            [0.0, 0.0, -1.0, 0.0],
        ];
        let eye = gl(&v.eye);
        PinholeCamera {
            view: Pose3::look_at_rh(eye, gl(&v.target), gl(&v.up)),
            proj: Mat4::from_cols_array_2d(&rows).transpose(),
            eye,
            clip: (n, f),
        }
    }
}

impl Camera3d for PinholeCamera {
    fn handle_event(&mut self, _: &Canvas, _: &WindowEvent) {}
    fn eye(&self) -> Vec3 {
        self.eye
    }
    fn view_transform(&self) -> Pose3 {
        self.view
    }
    fn transformation(&self) -> Mat4 {
        self.proj * self.view.to_mat4()
    }
    fn inverse_transformation(&self) -> Mat4 {
        self.transformation().inverse()
    }
    fn clip_planes(&self) -> (f32, f32) {
        self.clip
    }
    fn update(&mut self, _: &Canvas) {}
    fn view_transform_pair(&self, _pass: usize) -> (Pose3, Mat4) {
        (self.view, self.proj)
    }
}

/// Scene nodes of one frame: the model at each pose, and a headlight.
struct Nodes {
    root: SceneNode3d,
    models: Vec<SceneNode3d>,
    light: SceneNode3d,
}

fn build_nodes(scene: &VizScene) -> Nodes {
    let mut root = SceneNode3d::empty();
    let mesh = &scene.mesh;
    let coords: Vec<Vec3> = mesh.vertices.iter().map(|v| Vec3::new(v.x, v.y, v.z)).collect();
    let normals = mesh.normals.as_ref().filter(|n| n.len() == coords.len()).map(|n| n.iter().map(|v| Vec3::new(v.x, v.y, v.z)).collect());
    let gpu = Rc::new(RefCell::new(GpuMesh3d::new(coords, mesh.faces.clone(), normals, None, false)));
    let models = scene
        .instances
        .iter()
        .map(|inst| {
            let p = inst.pose.orthonormalized();
            // x_gl = F·(R·x + t) with F = diag(1, −1, −1).
            let r = p.r.cast::<f32>();
            let fr = Mat3::from_cols(
                Vec3::new(r[(0, 0)], -r[(1, 0)], -r[(2, 0)]),
                Vec3::new(r[(0, 1)], -r[(1, 1)], -r[(2, 1)]),
                Vec3::new(r[(0, 2)], -r[(1, 2)], -r[(2, 2)]),
            );
            let [r, g, b] = inst.color;
            root.add_mesh(gpu.clone(), Vec3::ONE)
                .set_pose(Pose3::from_parts(gl(&p.t.cast()), Quat::from_mat3(&fr)))
                .set_color(srgb_color(r, g, b))
                .enable_backface_culling(false)
        })
        .collect();
    let light = root.add_light(Light::directional(Vec3::NEG_Z).with_casts_shadows(false));
    Nodes { root, models, light }
}

/// Where the points are seen from, to size them: eye and unit forward direction (kiss3d's
/// frame), focal length in pixels.
struct Eye {
    pos: Vec3,
    forward: Vec3,
    focal: f32,
}

/// The cloud's points, drawn each frame (kiss3d's points are immediate-mode). Each covers the
/// `stride`×`stride` pixels it stands for in the original frame, as seen from `eye` (sizes
/// are in pixels, so they are scaled by focal length and distance).
fn draw_points(scene: &VizScene, eye: &Eye, mut draw: impl FnMut(Vec3, Color, f32)) {
    let base = scene.stride as f32 * eye.focal / scene.camera.fx as f32;
    for (p, c) in scene.points.iter().zip(&scene.colors) {
        // Pushed 0.5 % back along the camera ray (the same pixel from the camera): where a
        // well-placed model lies on its own observed surface, the model wins the depth test.
        let q = gl(&(p * 1.005));
        let z = (q - eye.pos).dot(eye.forward);
        if z <= 0.0 {
            continue;
        }
        let c = srgb_color(f32::from(c[0]) / 255.0, f32::from(c[1]) / 255.0, f32::from(c[2]) / 255.0);
        // Seen from aside, a surface the camera saw at a grazing angle spreads its samples
        // apart: grow the points with the angle between the two lines of sight.
        let cos = (q.normalize().dot((q - eye.pos).normalize())).max(0.5);
        draw(q, c, (base * p.z / z / cos + 1.0).clamp(1.0, 32.0));
    }
}

/// Renders `scene` seen from `kind` (centred on instance `instance`) into a `width`×`height`
/// image, without a window or a display.
pub fn render_image(scene: &VizScene, kind: ViewKind, instance: usize, width: u32, height: u32) -> anyhow::Result<image::RgbImage> {
    init_headless_context()?;
    let view = scene.view(kind, instance, width, height);
    guarded("offscreen rendering", || {
        kiss3d::pollster::block_on(async {
            let mut surface = OffscreenSurface::new(width, height).await;
            surface.set_background_color(BACKGROUND);
            surface.set_tonemap(Tonemap::None);
            surface.set_ambient(0.35);
            surface.set_shadows_enabled(false);
            let mut camera = PinholeCamera::new(&view);
            let mut nodes = build_nodes(scene);
            nodes.light.set_rotation(camera.view.rotation.inverse());
            let eye = Eye { pos: camera.eye, forward: (gl(&view.target) - camera.eye).normalize(), focal: view.fx };
            let window = surface.window_mut();
            draw_points(scene, &eye, |p, c, s| window.draw_point(p, c, s));
            surface.render_image_3d(&mut nodes.root, &mut camera).await
        })
    })
    .map(|img| image::RgbImage::from_raw(img.width(), img.height(), img.into_raw()).expect("same layout"))
}

/// Opens a window on the first frame; `load` reads a frame's inputs when it is first shown.
pub fn run_window(frames: &[FrameRecord], load: &dyn Fn(&FrameRecord) -> anyhow::Result<VizScene>, size: Option<(u32, u32)>) -> anyhow::Result<()> {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    anyhow::ensure!(
        has_display,
        "no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset): \
         render to an image instead with --png FILE (e.g. --png out.png --view orbit)"
    );
    // The window makes its own context (it needs the window's surface); this only checks
    // that an adapter exists, so that a missing driver is an error rather than a panic.
    find_adapter()?;
    let mut cache: Vec<Option<Rc<VizScene>>> = vec![None; frames.len()];
    let first = Rc::new(load(&frames[0]).with_context(|| format!("frame {}", frames[0].label))?);
    cache[0] = Some(first.clone());
    let (w, h) = size.unwrap_or((first.width.clamp(320, 1600), first.height.clamp(240, 1200)));
    guarded("the viewer window", || kiss3d::pollster::block_on(window_loop(frames, load, cache, w, h)))?
}

struct State {
    frame: usize,
    instance: usize,
    all: bool,
    models: bool,
}

async fn window_loop(
    frames: &[FrameRecord],
    load: &dyn Fn(&FrameRecord) -> anyhow::Result<VizScene>,
    mut cache: Vec<Option<Rc<VizScene>>>,
    w: u32,
    h: u32,
) -> anyhow::Result<()> {
    let mut window = Window::new_with_size("sam6d viz", w, h).await;
    window.set_background_color(BACKGROUND);
    window.set_tonemap(Tonemap::None);
    window.set_ambient(0.35);
    window.set_shadows_enabled(false);
    window.rebind_close_key(Some(Key::Escape));
    let font = Font::default();
    let mut st = State { frame: 0, instance: 0, all: true, models: true };
    let mut scene = cache[0].clone().expect("the first frame is loaded");
    let mut nodes = build_nodes(&scene);
    let mut camera = orbit_camera(&scene, ViewKind::Camera, 0, w, h);
    let mut status: Option<String> = None;
    loop {
        for (k, node) in nodes.models.iter_mut().enumerate() {
            node.set_visible(st.models && (st.all || k == st.instance));
        }
        nodes.light.set_rotation(camera.view_transform().rotation.inverse());
        let focal = window.height() as f32 / 2.0 / (camera.fov() / 2.0).tan();
        let eye = Eye { pos: camera.eye(), forward: (camera.at() - camera.eye()).normalize(), focal };
        draw_points(&scene, &eye, |p, c, s| window.draw_point(p, c, s));
        for (i, line) in hud(frames, &scene, &st, status.as_deref()).lines().enumerate() {
            window.draw_text(line, Vec2::new(8.0, 8.0 + 30.0 * i as f32), 28.0, &font, Color::new(1.0, 1.0, 1.0, 1.0));
        }
        if !window.render_3d(&mut nodes.root, &mut camera).await {
            return Ok(());
        }
        let mut frame_step: isize = 0;
        let mut view: Option<ViewKind> = None;
        for event in window.events().iter() {
            let WindowEvent::Key(key, Action::Press, _) = event.value else { continue };
            tracing::debug!("key {key:?}");
            let n = scene.instances.len().max(1);
            match key {
                Key::Q => return Ok(()),
                Key::Right | Key::N => (st.instance, view) = ((st.instance + 1) % n, Some(ViewKind::Orbit)),
                Key::Left | Key::P => (st.instance, view) = ((st.instance + n - 1) % n, Some(ViewKind::Orbit)),
                Key::Space | Key::PageDown => frame_step = 1,
                Key::Back | Key::PageUp => frame_step = -1,
                Key::C => view = Some(ViewKind::Camera),
                Key::O => view = Some(ViewKind::Orbit),
                Key::A => st.all = !st.all,
                Key::M => st.models = !st.models,
                _ => {}
            }
        }
        if frame_step != 0 && frames.len() > 1 {
            let next = (st.frame as isize + frame_step).rem_euclid(frames.len() as isize) as usize;
            let loaded = match &cache[next] {
                Some(s) => Ok(s.clone()),
                None => load(&frames[next]).map(Rc::new),
            };
            match loaded {
                Ok(s) => {
                    cache[next] = Some(s.clone());
                    st.frame = next;
                    st.instance = 0;
                    scene = s;
                    nodes.root.detach();
                    nodes = build_nodes(&scene);
                    view = Some(ViewKind::Camera);
                    status = None;
                }
                Err(e) => status = Some(format!("cannot show frame {}: {e:#}", frames[next].label)),
            }
        }
        if let Some(kind) = view {
            camera = orbit_camera(&scene, kind, st.instance, window.width(), window.height());
        }
    }
}

/// kiss3d's mouse-driven camera, placed at `kind`'s viewpoint and turning around the instance.
fn orbit_camera(scene: &VizScene, kind: ViewKind, instance: usize, w: u32, h: u32) -> OrbitCamera3d {
    let v = scene.view(kind, instance, w, h);
    let fov = 2.0 * (h as f32 / 2.0 / v.fy).atan();
    let at = gl(&scene.focus(instance));
    let mut cam = OrbitCamera3d::new_with_frustum(fov, v.near, v.far * 4.0, gl(&v.eye), at);
    cam.set_max_dist(v.far * 2.0);
    cam.set_min_dist(v.near * 2.0);
    cam
}

fn hud(frames: &[FrameRecord], scene: &VizScene, st: &State, status: Option<&str>) -> String {
    let mut s = String::new();
    if frames.len() > 1 {
        s += &format!("frame {}/{} {}   ", st.frame + 1, frames.len(), scene.label);
    }
    match scene.instances.get(st.instance) {
        Some(inst) => s += &format!("instance {}/{}  score {:.3}", st.instance + 1, scene.instances.len(), inst.score),
        None => s += "no instance found",
    }
    if let Some(e) = &scene.error {
        s += &format!("   (failed: {e})");
    }
    if let Some(m) = status {
        s += &format!("\n{m}");
    }
    s
}
