//! MIG profiles per GPU model, their valid placements, and the layout search.
//!
//! Sources: NVIDIA Multi-Instance GPU User Guide, "Supported MIG Profiles" (profile
//! names, instance counts, placement diagrams for A100, H100, H200, B200), and the
//! `nvidia-smi mig -lgip` / `-lgipp` output it shows (profile IDs 19, 20, 15, 14, 9, 5, 0
//! and placements such as `{0,1,2,3,4,5,6}:1` for 1g). Every model here has 8 memory
//! slices and 7 compute slices and shares one placement geometry. The GB200 names are
//! inferred from its 186 GB by NVIDIA's naming rule (memory per slice, rounded), not read
//! off hardware; the rest are as the guide prints them.

use std::fmt;

use super::GpuModel;
use crate::spec::types::MigProfileName;

/// Memory slices of a MIG-capable GPU in this catalog.
pub const MEMORY_SLICES: u8 = 8;
/// Compute slices (GPCs available to MIG).
pub const COMPUTE_SLICES: u8 = 7;

/// A GPU instance profile of one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigProfile {
    /// The id `nvidia-smi mig -cgi` takes and `-lgip` prints.
    pub id: u32,
    pub name: &'static str,
    pub compute_slices: u8,
    pub memory_slices: u8,
    pub max_instances: u8,
    /// Memory slices an instance may start at.
    pub starts: &'static [u8],
    /// Holds the GPU's one set of media engines (`+me`), so at most one per GPU.
    pub media_extensions: bool,
}

impl MigProfile {
    /// Memory slices an instance at `start` occupies, as a bit mask.
    pub fn mask(&self, start: u8) -> u8 {
        let ones = if self.memory_slices >= 8 { u8::MAX } else { (1u8 << self.memory_slices) - 1 };
        ones << start
    }

    pub fn slices(&self, start: u8) -> std::ops::Range<u8> {
        start..start + self.memory_slices
    }
}

/// The shared geometry: (id, compute, memory, max instances, starts, +me).
type Geometry = (u32, u8, u8, u8, &'static [u8], bool);
const G_1G: Geometry = (19, 1, 1, 7, &[0, 1, 2, 3, 4, 5, 6], false);
const G_1G_ME: Geometry = (20, 1, 1, 1, &[0, 1, 2, 3, 4, 5, 6], true);
const G_1G_2X: Geometry = (15, 1, 2, 4, &[0, 2, 4, 6], false);
const G_2G: Geometry = (14, 2, 2, 3, &[0, 2, 4], false);
const G_3G: Geometry = (9, 3, 4, 2, &[0, 4], false);
const G_4G: Geometry = (5, 4, 4, 1, &[0], false);
const G_7G: Geometry = (0, 7, 8, 1, &[0], false);

const fn p(name: &'static str, g: Geometry) -> MigProfile {
    MigProfile {
        id: g.0,
        name,
        compute_slices: g.1,
        memory_slices: g.2,
        max_instances: g.3,
        starts: g.4,
        media_extensions: g.5,
    }
}

static A100_40GB: [MigProfile; 7] = [
    p("1g.5gb", G_1G),
    p("1g.5gb+me", G_1G_ME),
    p("1g.10gb", G_1G_2X),
    p("2g.10gb", G_2G),
    p("3g.20gb", G_3G),
    p("4g.20gb", G_4G),
    p("7g.40gb", G_7G),
];
static GB80: [MigProfile; 7] = [
    p("1g.10gb", G_1G),
    p("1g.10gb+me", G_1G_ME),
    p("1g.20gb", G_1G_2X),
    p("2g.20gb", G_2G),
    p("3g.40gb", G_3G),
    p("4g.40gb", G_4G),
    p("7g.80gb", G_7G),
];
static H100_94GB: [MigProfile; 7] = [
    p("1g.12gb", G_1G),
    p("1g.12gb+me", G_1G_ME),
    p("1g.24gb", G_1G_2X),
    p("2g.24gb", G_2G),
    p("3g.47gb", G_3G),
    p("4g.47gb", G_4G),
    p("7g.94gb", G_7G),
];
static H200_141GB: [MigProfile; 7] = [
    p("1g.18gb", G_1G),
    p("1g.18gb+me", G_1G_ME),
    p("1g.35gb", G_1G_2X),
    p("2g.35gb", G_2G),
    p("3g.71gb", G_3G),
    p("4g.71gb", G_4G),
    p("7g.141gb", G_7G),
];
// Inferred (see the module comment).
static GB200: [MigProfile; 7] = [
    p("1g.23gb", G_1G),
    p("1g.23gb+me", G_1G_ME),
    p("1g.47gb", G_1G_2X),
    p("2g.47gb", G_2G),
    p("3g.93gb", G_3G),
    p("4g.93gb", G_4G),
    p("7g.186gb", G_7G),
];

/// The MIG profiles of a model (empty when it has no MIG).
pub fn profiles(model: GpuModel) -> &'static [MigProfile] {
    match model {
        GpuModel::A100_40GB => &A100_40GB,
        GpuModel::A100_80GB | GpuModel::H100_80GB => &GB80,
        GpuModel::H100_94GB => &H100_94GB,
        GpuModel::H200_141GB => &H200_141GB,
        GpuModel::GB200 => &GB200,
        GpuModel::L40S => &[],
    }
}

pub fn profile(model: GpuModel, name: &MigProfileName) -> Option<&'static MigProfile> {
    let text = name.to_string();
    profiles(model).iter().find(|p| p.name == text)
}

/// The profile of `model` with the shape of a profile named for another model
/// (`3g.40gb`, an H100 name, asked of an H200 is its `3g.71gb`): to suggest the right name.
pub fn same_shape(model: GpuModel, name: &MigProfileName) -> Option<&'static MigProfile> {
    let text = name.to_string();
    let id = <GpuModel as crate::spec::decode::Word>::NAMES
        .iter()
        .enumerate()
        .rev() // newest first: `1g.10gb` is an H100's 1g, not an A100-40GB's double-memory 1g
        .map(|(i, _)| <GpuModel as crate::spec::decode::Word>::from_index(i))
        .find_map(|m| profiles(m).iter().find(|p| p.name == text))?
        .id;
    profiles(model).iter().find(|p| p.id == id)
}

/// One instance asked for in a layout.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub profile: &'static MigProfile,
    /// A start the operator pinned.
    pub start: Option<u8>,
}

/// Why a layout does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misfit {
    /// A pinned start the profile cannot take.
    BadStart { index: usize, start: u8 },
    /// Two pinned instances share memory slices.
    Overlap { a: usize, b: usize, slices: std::ops::Range<u8> },
    /// More instances of a profile than the GPU offers.
    TooMany { profile: &'static str, count: usize, max: u8 },
    /// More than one `+me` instance.
    MediaTwice { a: usize, b: usize },
    /// More compute or memory slices than the GPU has.
    TooBig { compute: u32, memory: u32 },
    /// Every slice count fits, but no arrangement of starts does.
    NoArrangement,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::BadStart { start, .. } => write!(f, "cannot start at memory slice {start}"),
            Misfit::Overlap { slices, .. } => write!(f, "instances overlap on memory slices {}", range(slices)),
            Misfit::TooMany { profile, count, max } => {
                write!(f, "{count} instances of {profile}, at most {max} fit on one GPU")
            }
            Misfit::MediaTwice { .. } => f.write_str("only one instance per GPU can have the media engines (`+me`)"),
            Misfit::TooBig { compute, memory } => write!(
                f,
                "the layout needs {compute} compute and {memory} memory slices; the GPU has {COMPUTE_SLICES} and {MEMORY_SLICES}"
            ),
            Misfit::NoArrangement => f.write_str("no arrangement of these instances fits the GPU's placement rules"),
        }
    }
}

pub fn range(r: &std::ops::Range<u8>) -> String {
    if r.end - r.start <= 1 { format!("{}", r.start) } else { format!("{}–{}", r.start, r.end - 1) }
}

/// Finds a start for every wanted instance, honouring pinned starts, or says why none
/// exists. The search is exhaustive (backtracking over every valid start of every
/// instance, largest first), so a layout that fits in only one order is found.
pub fn fit(wants: &[Want]) -> Result<Vec<u8>, Misfit> {
    for (i, w) in wants.iter().enumerate() {
        if let Some(s) = w.start
            && !w.profile.starts.contains(&s)
        {
            return Err(Misfit::BadStart { index: i, start: s });
        }
    }
    for (a, wa) in wants.iter().enumerate() {
        for (b, wb) in wants.iter().enumerate().skip(a + 1) {
            if let (Some(sa), Some(sb)) = (wa.start, wb.start) {
                let (ra, rb) = (wa.profile.slices(sa), wb.profile.slices(sb));
                let lo = ra.start.max(rb.start);
                let hi = ra.end.min(rb.end);
                if lo < hi {
                    return Err(Misfit::Overlap { a, b, slices: lo..hi });
                }
            }
            if wa.profile.media_extensions && wb.profile.media_extensions {
                return Err(Misfit::MediaTwice { a, b });
            }
        }
    }
    for w in wants {
        let count = wants.iter().filter(|x| x.profile.name == w.profile.name).count();
        if count > usize::from(w.profile.max_instances) {
            return Err(Misfit::TooMany { profile: w.profile.name, count, max: w.profile.max_instances });
        }
    }
    let compute: u32 = wants.iter().map(|w| u32::from(w.profile.compute_slices)).sum();
    let memory: u32 = wants.iter().map(|w| u32::from(w.profile.memory_slices)).sum();
    if compute > u32::from(COMPUTE_SLICES) || memory > u32::from(MEMORY_SLICES) {
        return Err(Misfit::TooBig { compute, memory });
    }
    // Pinned first, then the largest: the big ones have the fewest starts.
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| (wants[i].start.is_none(), std::cmp::Reverse(wants[i].profile.memory_slices), i));
    let mut starts = vec![0u8; wants.len()];
    if place(wants, &order, 0, 0, &mut starts) { Ok(starts) } else { Err(Misfit::NoArrangement) }
}

fn place(wants: &[Want], order: &[usize], k: usize, used: u8, starts: &mut [u8]) -> bool {
    let Some(&i) = order.get(k) else { return true };
    let w = wants[i];
    let candidates: &[u8] = match &w.start {
        Some(s) => std::slice::from_ref(s),
        None => w.profile.starts,
    };
    for &s in candidates {
        let mask = w.profile.mask(s);
        if used & mask == 0 {
            starts[i] = s;
            if place(wants, order, k + 1, used | mask, starts) {
                return true;
            }
        }
    }
    false
}

/// The largest part of a layout that fits (by compute slices, then count), to suggest
/// when the whole does not. Returns the indices kept and their starts.
pub fn largest_fitting(wants: &[Want]) -> Option<(Vec<usize>, Vec<u8>)> {
    if wants.len() > 16 {
        return None; // 2^16 subsets is the most worth trying for a suggestion
    }
    let mut best: Option<(u32, usize, Vec<usize>, Vec<u8>)> = None;
    for subset in 1u32..(1 << wants.len()) {
        let idx: Vec<usize> = (0..wants.len()).filter(|i| subset & (1 << i) != 0).collect();
        let sub: Vec<Want> = idx.iter().map(|&i| wants[i]).collect();
        let compute: u32 = sub.iter().map(|w| u32::from(w.profile.compute_slices)).sum();
        if best.as_ref().is_some_and(|b| (b.0, b.1) >= (compute, idx.len())) {
            continue;
        }
        if let Ok(starts) = fit(&sub) {
            best = Some((compute, idx.len(), idx, starts));
        }
    }
    best.map(|(_, _, idx, starts)| (idx, starts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(model: GpuModel, name: &str, start: Option<u8>) -> Want {
        let n = MigProfileName::parse(name).unwrap();
        Want { profile: profile(model, &n).unwrap_or_else(|| panic!("{name} on {model}")), start }
    }

    fn h200(layout: &[&str]) -> Vec<Want> {
        layout.iter().map(|n| want(GpuModel::H200_141GB, n, None)).collect()
    }

    /// Every single instance of every profile fits at each of its starts, and nowhere else.
    #[test]
    fn single_instances_fit_exactly_at_their_starts() {
        for model in
            [GpuModel::A100_40GB, GpuModel::H100_80GB, GpuModel::H100_94GB, GpuModel::H200_141GB, GpuModel::GB200]
        {
            for p in profiles(model) {
                for s in 0..MEMORY_SLICES {
                    let r = fit(&[Want { profile: p, start: Some(s) }]);
                    assert_eq!(r.is_ok(), p.starts.contains(&s), "{model} {} at {s}", p.name);
                }
                assert!(p.starts.iter().all(|&s| s + p.memory_slices <= MEMORY_SLICES), "{} runs off the GPU", p.name);
            }
        }
    }

    /// The documented maximum of each profile fits, and one more does not.
    #[test]
    fn max_instances_fit_and_one_more_does_not() {
        for p in profiles(GpuModel::H200_141GB) {
            let max: Vec<Want> = (0..p.max_instances).map(|_| Want { profile: p, start: None }).collect();
            assert!(fit(&max).is_ok(), "{} x{}", p.name, p.max_instances);
            let mut more = max.clone();
            more.push(Want { profile: p, start: None });
            assert!(fit(&more).is_err(), "{} x{}", p.name, p.max_instances + 1);
        }
    }

    #[test]
    fn fits_only_in_one_order() {
        // 3g must take slices 4–7: placed first at 0 (the greedy choice) the 2g and two 1g
        // would need slice 7, which no 1g may start at.
        let wants = h200(&["2g.35gb", "1g.18gb", "1g.18gb", "3g.71gb"]);
        let starts = fit(&wants).unwrap();
        assert_eq!(starts[3], 4, "3g at 4");
        let mut used = 0u8;
        for (w, s) in wants.iter().zip(&starts) {
            assert_eq!(used & w.profile.mask(*s), 0, "no overlap");
            used |= w.profile.mask(*s);
        }
    }

    #[test]
    fn exhaustive_search_agrees_with_brute_force() {
        // Every multiset of up to 4 H200 profiles: `fit` succeeds exactly when some
        // assignment of starts (tried by brute force) has no overlap.
        let ps = profiles(GpuModel::H200_141GB);
        let mut checked = 0;
        let mut combo = vec![];
        fn rec(ps: &'static [MigProfile], from: usize, combo: &mut Vec<usize>, checked: &mut usize) {
            if !combo.is_empty() {
                let wants: Vec<Want> = combo.iter().map(|&i| Want { profile: &ps[i], start: None }).collect();
                let me = combo.iter().filter(|&&i| ps[i].media_extensions).count();
                let brute = me <= 1 && brute(&wants, 0, 0);
                assert_eq!(fit(&wants).is_ok(), brute, "{:?}", combo.iter().map(|&i| ps[i].name).collect::<Vec<_>>());
                *checked += 1;
            }
            if combo.len() == 4 {
                return;
            }
            for i in from..ps.len() {
                combo.push(i);
                rec(ps, i, combo, checked);
                combo.pop();
            }
        }
        fn brute(wants: &[Want], k: usize, used: u8) -> bool {
            let Some(w) = wants.get(k) else { return true };
            w.profile
                .starts
                .iter()
                .any(|&s| used & w.profile.mask(s) == 0 && brute(wants, k + 1, used | w.profile.mask(s)))
        }
        rec(ps, 0, &mut combo, &mut checked);
        assert!(checked > 300, "{checked} layouts checked");
    }

    #[test]
    fn misfits_say_why() {
        let mut w = h200(&["3g.71gb", "2g.35gb"]);
        w[0].start = Some(4);
        w[1].start = Some(4);
        assert_eq!(fit(&w), Err(Misfit::Overlap { a: 0, b: 1, slices: 4..6 }));
        assert!(matches!(fit(&h200(&["4g.71gb", "4g.71gb"])), Err(Misfit::TooMany { max: 1, .. })));
        assert!(matches!(fit(&h200(&["1g.18gb+me", "1g.18gb+me"])), Err(Misfit::MediaTwice { .. })));
        assert!(matches!(fit(&h200(&["7g.141gb", "1g.18gb"])), Err(Misfit::TooBig { .. })));
        // 3g pinned at 0 leaves 4–7; a 2g and two 1g need slice 7, where no 1g may start.
        let mut w = h200(&["3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"]);
        w[0].start = Some(0);
        assert_eq!(fit(&w), Err(Misfit::NoArrangement));
        let mut w = h200(&["3g.71gb"]);
        w[0].start = Some(2);
        assert_eq!(fit(&w), Err(Misfit::BadStart { index: 0, start: 2 }));
    }

    #[test]
    fn suggests_the_largest_part_that_fits() {
        let mut w = h200(&["3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb"]);
        w[0].start = Some(0);
        let (kept, _) = largest_fitting(&w).unwrap();
        assert_eq!(kept, vec![0, 1, 2], "3g@0 + 2g + one 1g");
    }

    #[test]
    fn same_shape_maps_names_between_models() {
        let n = MigProfileName::parse("3g.40gb").unwrap();
        assert_eq!(same_shape(GpuModel::H200_141GB, &n).unwrap().name, "3g.71gb");
        let n = MigProfileName::parse("1g.20gb").unwrap();
        assert_eq!(same_shape(GpuModel::H200_141GB, &n).unwrap().name, "1g.35gb");
        let n = MigProfileName::parse("1g.10gb").unwrap();
        assert_eq!(same_shape(GpuModel::H200_141GB, &n).unwrap().name, "1g.18gb");
    }
}
