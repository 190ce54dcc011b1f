//! `fabrik::mig::*`: MIG layouts a GPU can really hold.
//!
//! A layout is valid when some non-overlapping placement of its instances exists within
//! the model's placement rules (`hw::mig::fit`, an exhaustive search); explicit
//! placements must be valid starts and must not overlap.

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::hw::GpuModel;
use crate::hw::mig::{self, Misfit, Want};
use crate::spec::model::{Gpu, GpuMode, Host, Spec};
use crate::spec::source::Spanned;
use crate::spec::types::MigProfileName;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::mig::no-mig",
        summary: "a MIG layout on a GPU model that has no MIG",
        protects: "an apply that would try to enable MIG on a card that cannot do it, failing halfway through a host",
        example: "gpus:\n  - address: \"0000:21:00.0\"\n    model: L40S\n    numa-node: 0\n    mig: [1g.12gb]",
        fix: "use `mode: passthrough` or `time-sliced` for this model, or put the layout on a MIG-capable GPU",
    },
    Rule {
        code: "fabrik::mig::mode-conflict",
        summary: "a GPU with a MIG layout whose `mode` is not `mig`",
        protects: "a GPU promised whole to one VM (passthrough) while its slices are promised to others",
        example: "gpus:\n  - address: \"0000:1b:00.0\"\n    model: H200-141GB\n    numa-node: 0\n    mode: passthrough\n    mig: [3g.71gb]",
        fix: "remove `mode` (a layout implies `mig`) or remove the layout",
    },
    Rule {
        code: "fabrik::mig::unknown-profile",
        summary: "a MIG profile the GPU model does not have",
        protects: "profiles copied from another model (`3g.40gb` is an H100's, an H200's is `3g.71gb`), which NVML refuses at apply time",
        example: "gpus:\n  - address: \"0000:1b:00.0\"\n    model: H200-141GB\n    numa-node: 0\n    mig: [3g.40gb]",
        fix: "use the model's own profile names (`nvidia-smi mig -lgip` lists them); the help names the one of the same shape",
    },
    Rule {
        code: "fabrik::mig::placement",
        summary: "an explicit placement that is not a valid start for the profile",
        protects: "placements NVML rejects: a 3g instance starts only at memory slice 0 or 4, a 2g at 0, 2 or 4",
        example: "mig:\n  - profile: 3g.71gb\n    placement: 2",
        fix: "use one of the starts the help lists, or leave `placement` out and let fabrik choose",
    },
    Rule {
        code: "fabrik::mig::overlap",
        summary: "two explicitly placed instances share memory slices",
        protects: "a layout that cannot exist: NVML would refuse the second instance, leaving the GPU half configured",
        example: "mig:\n  - { profile: 3g.71gb, placement: 4 }\n  - { profile: 2g.35gb, placement: 4 }",
        fix: "move one instance to free slices, or drop the placements and let fabrik find an arrangement",
    },
    Rule {
        code: "fabrik::mig::media-extensions",
        summary: "more than one `+me` instance on one GPU",
        protects: "a GPU has one set of media engines (NVDEC, NVJPG, OFA): only one instance can hold them",
        example: "mig: [1g.18gb+me, 1g.18gb+me]",
        fix: "keep one `+me` instance; make the others plain `1g` profiles",
    },
    Rule {
        code: "fabrik::mig::layout",
        summary: "the instances of a MIG layout do not fit on the GPU together",
        protects: "layouts that exceed the GPU's 7 compute and 8 memory slices, the per-profile instance limits, or that fit no arrangement of starts",
        example: "mig: [4g.71gb, 2g.35gb, 2g.35gb]",
        fix: "follow the help: it names what does not fit and the largest part of the layout that does",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for host in &spec.hosts {
        for gpu in &host.gpus {
            check_gpu(host, gpu, out);
        }
    }
    for e in spec.effective_vms() {
        let Some(req) = e.gpu() else { continue };
        let Some(profile) = &req.mig else { continue };
        if !req.model.value.supports_mig() {
            out.push(
                Diagnostic::error(
                    "fabrik::mig::no-mig",
                    format!("{} has no MIG, but VM `{}` asks for {}", req.model.value, e.vm.name.value, profile.value),
                )
                .at(profile.span, "MIG profile")
                .also(req.model.span, "on this model")
                .help("ask for whole GPUs (drop `mig`) or a MIG-capable model"),
            );
        } else if mig::profile(req.model.value, &profile.value).is_none() {
            out.push(unknown_profile(req.model.value, profile, &format!("VM `{}`", e.vm.name.value)));
        }
    }
}

fn check_gpu(host: &Host, gpu: &Gpu, out: &mut Vec<Diagnostic>) {
    let Some(first) = gpu.mig.first() else { return };
    let what = format!("GPU {} of host `{}`", gpu.address.value, host.name.value);
    let model = gpu.model.value;
    if !model.supports_mig() {
        out.push(
            Diagnostic::error("fabrik::mig::no-mig", format!("{what} is an {model}, which has no MIG"))
                .at(first.profile.span, "MIG layout")
                .also(gpu.model.span, "this model has no MIG")
                .help("use `mode: passthrough` or `mode: time-sliced` for this GPU"),
        );
        return;
    }
    if gpu.mode.value != GpuMode::Mig {
        out.push(
            Diagnostic::error(
                "fabrik::mig::mode-conflict",
                format!("{what} is `{}` but has a MIG layout", gpu.mode.value),
            )
            .at(gpu.mode.span, format!("mode `{}`", gpu.mode.value))
            .also(first.profile.span, "MIG layout")
            .help("a GPU is either whole (passthrough), time-sliced or split by MIG: remove `mode` or the layout"),
        );
        return;
    }
    let mut wants = Vec::new();
    for slot in &gpu.mig {
        match mig::profile(model, &slot.profile.value) {
            Some(p) => wants.push(Want { profile: p, start: slot.placement.as_ref().map(|s| s.value) }),
            None => out.push(unknown_profile(model, &slot.profile, &what)),
        }
    }
    if wants.len() != gpu.mig.len() {
        return; // unknown profiles reported; the layout cannot be judged
    }
    let Err(misfit) = mig::fit(&wants) else { return };
    out.push(misfit_diagnostic(gpu, &what, &wants, &misfit));
}

fn unknown_profile(model: GpuModel, profile: &Spanned<MigProfileName>, what: &str) -> Diagnostic {
    let names: Vec<&str> = mig::profiles(model).iter().map(|p| p.name).collect();
    let help = match mig::same_shape(model, &profile.value) {
        Some(p) => format!("on {model} this shape is `{}`; its profiles are {}", p.name, names.join(", ")),
        None => format!("{model} has {}", names.join(", ")),
    };
    Diagnostic::error("fabrik::mig::unknown-profile", format!("{what}: {model} has no MIG profile `{}`", profile.value))
        .at(profile.span, "not a profile of this model")
        .help(help)
}

fn misfit_diagnostic(gpu: &Gpu, what: &str, wants: &[Want], misfit: &Misfit) -> Diagnostic {
    let slot = |i: usize| &gpu.mig[i];
    let describe = |i: usize| {
        let start = slot(i).placement.as_ref().map(|p| p.value);
        match start {
            Some(s) => format!("{}@{} (slices {})", wants[i].profile.name, s, mig::range(&wants[i].profile.slices(s))),
            None => wants[i].profile.name.to_string(),
        }
    };
    match misfit {
        Misfit::BadStart { index, start } => {
            let p = wants[*index].profile;
            let starts: Vec<String> = p.starts.iter().map(u8::to_string).collect();
            let placement = slot(*index).placement.as_ref().map_or(slot(*index).profile.span, |p| p.span);
            Diagnostic::error(
                "fabrik::mig::placement",
                format!("{what}: {} cannot start at memory slice {start}", p.name),
            )
            .at(placement, "invalid start")
            .help(format!("{} may start at {}; or leave `placement` out", p.name, starts.join(", ")))
        }
        Misfit::Overlap { a, b, slices } => Diagnostic::error(
            "fabrik::mig::overlap",
            format!("{what}: {} and {} overlap on memory slices {}", describe(*a), describe(*b), mig::range(slices)),
        )
        .at(slot(*b).span, format!("overlaps on slices {}", mig::range(slices)))
        .also(slot(*a).span, "with this instance")
        .help(suggestion(wants, "move one of them to free slices, or drop the placements")),
        Misfit::MediaTwice { a, b } => Diagnostic::error(
            "fabrik::mig::media-extensions",
            format!("{what}: more than one instance with media engines (`+me`)"),
        )
        .at(slot(*b).span, "second `+me` instance")
        .also(slot(*a).span, "first `+me` instance")
        .help("a GPU has one set of media engines; keep one `+me` instance"),
        Misfit::TooMany { .. } | Misfit::TooBig { .. } | Misfit::NoArrangement => {
            let mut d =
                Diagnostic::error("fabrik::mig::layout", format!("{what}: the MIG layout does not fit: {misfit}"))
                    .at(gpu.mig[0].span.join(gpu.mig[gpu.mig.len() - 1].span), "this layout");
            d = d.also(gpu.model.span, format!("{} has 7 compute and 8 memory slices", gpu.model.value));
            d.help(suggestion(wants, "remove instances until it fits"))
        }
    }
}

/// Suggests a layout that fits: the same instances without their fixed placements when
/// that is enough, else the largest part of the layout that fits, with its starts.
fn suggestion(wants: &[Want], otherwise: &str) -> String {
    let show = |idx: &[usize], starts: &[u8]| {
        idx.iter().zip(starts).map(|(&i, s)| format!("{}@{s}", wants[i].profile.name)).collect::<Vec<_>>().join(", ")
    };
    if wants.iter().any(|w| w.start.is_some()) {
        let free: Vec<Want> = wants.iter().map(|w| Want { start: None, ..*w }).collect();
        if let Ok(starts) = mig::fit(&free) {
            let all: Vec<usize> = (0..wants.len()).collect();
            return format!("without the fixed placements it fits: [{}]", show(&all, &starts));
        }
    }
    match mig::largest_fitting(wants) {
        Some((kept, starts)) => format!("{otherwise}; this part fits: [{}]", show(&kept, &starts)),
        _ => otherwise.to_string(),
    }
}
