//! Route planning: the cheapest way, in bytes to fetch, from the installed version to the target.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::manifest::{Manifest, ObjectRef};

/// One piece of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply the patch `object` to version `from`, giving version `to`.
    Patch {
        /// The version the patch applies to.
        from: String,
        /// The version it produces.
        to: String,
        /// The patch file.
        object: ObjectRef,
    },
    /// Download version `version`'s full archive.
    Full {
        /// The version downloaded.
        version: String,
        /// Its full archive.
        object: ObjectRef,
    },
}

impl Step {
    /// The repository file this step downloads.
    pub fn object(&self) -> &ObjectRef {
        match self {
            Step::Patch { object, .. } | Step::Full { object, .. } => object,
        }
    }

    /// The version this step produces.
    pub fn produces(&self) -> &str {
        match self {
            Step::Patch { to, .. } => to,
            Step::Full { version, .. } => version,
        }
    }
}

/// A way to reach `target`: the steps in order and the bytes they cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The version the route ends at.
    pub target: String,
    /// Steps in the order they are applied; a full download is always a single step.
    pub steps: Vec<Step>,
    /// Bytes still to download (pieces already complete locally are free).
    pub fetch_bytes: u64,
}

impl Route {
    /// Whether the route is the target's full download.
    pub fn is_full(&self) -> bool {
        matches!(self.steps.as_slice(), [Step::Full { .. }])
    }
}

/// The full download of `target`.
pub fn full_route(manifest: &Manifest, target: &str, have: &dyn Fn(&ObjectRef) -> bool) -> Option<Route> {
    let version = manifest.version(target)?;
    let cost = if have(&version.full) { 0 } else { version.full.size };
    Some(Route {
        target: target.to_owned(),
        steps: vec![Step::Full { version: target.to_owned(), object: version.full.clone() }],
        fetch_bytes: cost,
    })
}

/// The cheapest route from `installed` (or from nothing) to `target`: a chain of patches or the full
/// download, fewest bytes first, then fewest pieces; the full download wins ties. `have` tells which
/// objects are already complete locally (they cost nothing). `None` when `target` is unknown.
pub fn plan(
    manifest: &Manifest,
    installed: Option<&str>,
    target: &str,
    have: &dyn Fn(&ObjectRef) -> bool,
) -> Option<Route> {
    let full = full_route(manifest, target, have)?;
    let (Some(installed), Some(goal)) = (installed.and_then(|v| manifest.position(v)), manifest.position(target))
    else {
        return Some(full);
    };
    if installed == goal {
        return Some(Route { target: target.to_owned(), steps: Vec::new(), fetch_bytes: 0 });
    }
    // Dijkstra over versions, edges being patches. Built once, so the work is O(patches · log versions)
    // however many versions a long-lived repository accumulates.
    let n = manifest.versions.len();
    let index: HashMap<&str, usize> =
        manifest.versions.iter().enumerate().map(|(i, v)| (v.version.as_str(), i)).collect();
    let mut outgoing: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n]; // from -> (to, patch index)
    for (to, version) in manifest.versions.iter().enumerate() {
        for (p, patch) in version.patches.iter().enumerate() {
            if let Some(&from) = index.get(patch.from.as_str()) {
                outgoing[from].push((to, p));
            }
        }
    }
    let mut best: Vec<Option<(u64, usize)>> = vec![None; n];
    let mut came_from: Vec<Option<(usize, usize)>> = vec![None; n]; // (previous version, patch index)
    let mut queue = BinaryHeap::new();
    best[installed] = Some((0, 0));
    queue.push(Reverse((0u64, 0usize, installed)));
    while let Some(Reverse((cost, pieces, at))) = queue.pop() {
        if best[at].is_some_and(|b| b < (cost, pieces)) {
            continue;
        }
        if at == goal {
            break;
        }
        for &(to, p) in &outgoing[at] {
            let patch = &manifest.versions[to].patches[p];
            let step_cost = if have(&patch.object) { 0 } else { patch.object.size };
            let next = (cost.saturating_add(step_cost), pieces + 1);
            if best[to].is_none_or(|b| next < b) {
                best[to] = Some(next);
                came_from[to] = Some((at, p));
                queue.push(Reverse((next.0, next.1, to)));
            }
        }
    }
    let Some((cost, pieces)) = best[goal] else { return Some(full) };
    if (cost, pieces) >= (full.fetch_bytes, 1) {
        return Some(full);
    }
    let mut steps = Vec::new();
    let mut at = goal;
    while let Some((previous, p)) = came_from[at] {
        let version = &manifest.versions[at];
        let patch = &version.patches[p];
        steps.push(Step::Patch { from: patch.from.clone(), to: version.version.clone(), object: patch.object.clone() });
        at = previous;
    }
    steps.reverse();
    Some(Route { target: target.to_owned(), steps, fetch_bytes: cost })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{PatchRef, Version};

    fn object(tag: &str, size: u64) -> ObjectRef {
        ObjectRef { path: format!("x/{tag}"), size, sha256: tag.repeat(64 / tag.len()) }
    }

    fn manifest(full_sizes: &[u64], patches: &[(usize, usize, u64)]) -> Manifest {
        let mut versions: Vec<Version> = full_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Version {
                version: format!("v{i}"),
                published: String::new(),
                full: object(&format!("f{i}"), size),
                files: object(&format!("t{i}"), 1),
                patches: vec![],
                blocks: None,
            })
            .collect();
        for &(from, to, size) in patches {
            versions[to]
                .patches
                .push(PatchRef { from: format!("v{from}"), object: object(&format!("p{from}{to}"), size) });
        }
        Manifest { versions, ..Manifest::empty() }
    }

    fn names(route: &Route) -> Vec<String> {
        route
            .steps
            .iter()
            .map(|s| match s {
                Step::Patch { from, to, .. } => format!("{from}>{to}"),
                Step::Full { version, .. } => format!("full {version}"),
            })
            .collect()
    }

    #[test]
    fn picks_the_cheapest_chain_or_the_full_download() {
        let m = manifest(&[100, 100, 100, 100], &[(0, 1, 10), (1, 2, 10), (2, 3, 10), (0, 3, 50), (1, 3, 15)]);
        let none = |_: &ObjectRef| false;
        let route = plan(&m, Some("v0"), "v3", &none).unwrap();
        assert_eq!(names(&route), ["v0>v1", "v1>v3"]);
        assert_eq!(route.fetch_bytes, 25);
        // A chain that costs as much as the full download loses to it.
        let m2 = manifest(&[100, 100, 100], &[(0, 1, 60), (1, 2, 40)]);
        assert_eq!(names(&plan(&m2, Some("v0"), "v2", &none).unwrap()), ["full v2"]);
        // Unknown or missing installs get the full download; the installed target needs nothing.
        assert_eq!(names(&plan(&m, None, "v3", &none).unwrap()), ["full v3"]);
        assert_eq!(names(&plan(&m, Some("nope"), "v3", &none).unwrap()), ["full v3"]);
        assert!(plan(&m, Some("v3"), "v3", &none).unwrap().steps.is_empty());
        // Going back in time has no patches: full download.
        assert_eq!(names(&plan(&m, Some("v3"), "v1", &none).unwrap()), ["full v1"]);
        assert!(plan(&m, Some("v0"), "v9", &none).is_none());
    }

    #[test]
    fn thousands_of_versions_plan_quickly() {
        // A nightly channel: 20,000 versions, each with patches from the previous 3.
        let sizes = vec![1u64 << 40; 20_000];
        let patches: Vec<(usize, usize, u64)> = (1..20_000usize)
            .flat_map(|to: usize| (to.saturating_sub(3)..to).map(move |from| (from, to, 1000)))
            .collect();
        let m = manifest(&sizes, &patches);
        let route = plan(&m, Some("v0"), "v19999", &|_| false).unwrap();
        assert_eq!(route.steps.len(), 6667);
        assert_eq!(route.fetch_bytes, 6_667_000);
    }

    #[test]
    fn pieces_already_downloaded_are_free() {
        let m = manifest(&[100, 100, 100], &[(0, 1, 30), (1, 2, 30), (0, 2, 50)]);
        let none = |_: &ObjectRef| false;
        assert_eq!(names(&plan(&m, Some("v0"), "v2", &none).unwrap()), ["v0>v2"]);
        let have_first = |o: &ObjectRef| o.path == "x/p01";
        let route = plan(&m, Some("v0"), "v2", &have_first).unwrap();
        assert_eq!(names(&route), ["v0>v1", "v1>v2"]);
        assert_eq!(route.fetch_bytes, 30);
    }
}
