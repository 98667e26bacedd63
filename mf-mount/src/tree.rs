//! The mounted namespace of one version of the archives (see `version.rs`): every file and
//! directory of the overlaid archives as one flat table of nodes. Nodes are numbered breadth-first,
//! which makes every directory's children a contiguous, name-sorted run of the table: lookups are a
//! binary search and a readdir offset is an index into the run.

use std::collections::btree_map::{BTreeMap, Entry as MapEntry};
use std::collections::VecDeque;

use mf_panda3d::AnyArchive;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Children are the nodes `first..first + count`, sorted by name; `subdirs` of them are
    /// directories (a directory's link count is 2 + subdirs).
    Dir { first: u32, count: u32, subdirs: u32 },
    /// Entry `entry` (position in path order, see [`AnyArchive::lookup_entry`]) of archive `archive`.
    File { archive: u32, entry: u32 },
}

#[derive(Debug, Clone, Copy)]
pub struct Node {
    name_start: u32,
    name_len: u32,
    pub parent: u32,
    pub kind: NodeKind,
}

/// The flat node table. Node 0 is the root.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    names: String,
    /// Sum of the sizes of the visible files.
    pub total_size: u64,
    pub file_count: u64,
}

/// Build-time tree: names borrowed from the archives' string tables.
enum Draft<'a> {
    Dir(BTreeMap<&'a str, Draft<'a>>),
    File { archive: u32, entry: u32 },
}

/// Raised when the namespace does not fit 32-bit node numbers.
#[derive(Debug)]
pub struct TooManyNodes;

impl Tree {
    /// Overlays `archives` in order: a later archive's entry replaces an earlier one at the same
    /// path, a later file hides an earlier directory of the same name and vice versa, and
    /// directories present in several archives are merged.
    pub fn build(archives: &[&AnyArchive]) -> Result<Tree, TooManyNodes> {
        let mut root: BTreeMap<&str, Draft<'_>> = BTreeMap::new();
        for (archive_index, archive) in archives.iter().enumerate() {
            let archive_index = u32::try_from(archive_index).map_err(|_| TooManyNodes)?;
            for (position, entry) in archive.entries_by_path().enumerate() {
                insert(&mut root, entry.path(), archive_index, u32::try_from(position).map_err(|_| TooManyNodes)?);
            }
        }
        flatten(&root, archives)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, index: u32) -> Option<&Node> {
        self.nodes.get(index as usize)
    }

    pub fn name(&self, node: &Node) -> &str {
        let start = node.name_start as usize;
        self.names.get(start..start + node.name_len as usize).unwrap_or("")
    }

    /// The child of directory `dir` named `name`, by binary search of its sorted children.
    pub fn find_child(&self, dir: &Node, name: &[u8]) -> Option<u32> {
        let NodeKind::Dir { first, count, .. } = dir.kind else { return None };
        let children = self.nodes.get(first as usize..(first + count) as usize)?;
        children.binary_search_by(|child| self.name(child).as_bytes().cmp(name)).ok().map(|i| first + i as u32)
    }
}

fn insert<'a>(root: &mut BTreeMap<&'a str, Draft<'a>>, path: &'a str, archive: u32, entry: u32) {
    let mut dir = root;
    let mut components = path.split('/').peekable();
    while let Some(component) = components.next() {
        if components.peek().is_none() {
            // A later archive's file replaces whatever an earlier one had here, directory included.
            dir.insert(component, Draft::File { archive, entry });
            return;
        }
        let slot = match dir.entry(component) {
            MapEntry::Vacant(vacant) => vacant.insert(Draft::Dir(BTreeMap::new())),
            MapEntry::Occupied(occupied) => {
                let slot = occupied.into_mut();
                if matches!(slot, Draft::File { .. }) {
                    // A later archive's directory replaces an earlier archive's file.
                    *slot = Draft::Dir(BTreeMap::new());
                }
                slot
            }
        };
        let Draft::Dir(children) = slot else { return };
        dir = children;
    }
}

fn flatten(root: &BTreeMap<&str, Draft<'_>>, archives: &[&AnyArchive]) -> Result<Tree, TooManyNodes> {
    let root_node =
        Node { name_start: 0, name_len: 0, parent: 0, kind: NodeKind::Dir { first: 1, count: 0, subdirs: 0 } };
    let mut tree = Tree { nodes: vec![root_node], names: String::new(), total_size: 0, file_count: 0 };
    let mut queue = VecDeque::from([(0u32, root)]);
    while let Some((index, children)) = queue.pop_front() {
        let first = u32::try_from(tree.nodes.len()).map_err(|_| TooManyNodes)?;
        let count = u32::try_from(children.len()).map_err(|_| TooManyNodes)?;
        first.checked_add(count).filter(|&end| end < u32::MAX).ok_or(TooManyNodes)?;
        let mut subdirs = 0u32;
        for (name, child) in children {
            let name_start = u32::try_from(tree.names.len()).map_err(|_| TooManyNodes)?;
            tree.names.push_str(name);
            let kind = match child {
                Draft::Dir(grandchildren) => {
                    subdirs += 1;
                    queue.push_back((tree.nodes.len() as u32, grandchildren));
                    // Filled in when the directory is dequeued.
                    NodeKind::Dir { first: 0, count: 0, subdirs: 0 }
                }
                Draft::File { archive, entry } => {
                    let size = archives
                        .get(*archive as usize)
                        .and_then(|a| a.lookup_entry(*entry as usize))
                        .map_or(0, |e| e.size());
                    tree.total_size = tree.total_size.saturating_add(size);
                    tree.file_count += 1;
                    NodeKind::File { archive: *archive, entry: *entry }
                }
            };
            tree.nodes.push(Node { name_start, name_len: name.len() as u32, parent: index, kind });
        }
        if let Some(node) = tree.nodes.get_mut(index as usize) {
            node.kind = NodeKind::Dir { first, count, subdirs };
        }
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> AnyArchive {
        let mut sorted = files.to_vec();
        sorted.sort();
        AnyArchive::from_bytes(mf_test_support::mf_bytes(sorted), "test.mf").unwrap()
    }

    fn listing(tree: &Tree, archives: &[AnyArchive]) -> Vec<String> {
        fn walk(tree: &Tree, archives: &[AnyArchive], index: u32, prefix: &str, out: &mut Vec<String>) {
            let node = tree.node(index).unwrap();
            if let NodeKind::Dir { first, count, .. } = node.kind {
                for child in first..first + count {
                    let child_node = tree.node(child).unwrap();
                    assert_eq!(child_node.parent, index);
                    let path = format!("{prefix}{}", tree.name(child_node));
                    match child_node.kind {
                        NodeKind::Dir { .. } => {
                            out.push(format!("{path}/"));
                            walk(tree, archives, child, &format!("{path}/"), out);
                        }
                        NodeKind::File { archive, entry } => {
                            let entry = archives[archive as usize].lookup_entry(entry as usize).unwrap();
                            let content = archives[archive as usize].read(&entry).unwrap();
                            out.push(format!("{path}={}", String::from_utf8_lossy(&content)));
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(tree, archives, 0, "", &mut out);
        out
    }

    #[test]
    fn later_archives_win_and_directories_merge() {
        let archives = vec![
            archive(&[("a/x", b"base"), ("a/y", b"base"), ("file", b"base"), ("dir/inner", b"base")]),
            archive(&[("a/x", b"dlc"), ("a/z", b"dlc"), ("file/now_a_dir", b"dlc"), ("dir", b"dlc")]),
        ];
        let tree = Tree::build(&archives.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(
            listing(&tree, &archives),
            ["a/", "a/x=dlc", "a/y=base", "a/z=dlc", "dir=dlc", "file/", "file/now_a_dir=dlc"]
        );
        assert_eq!(tree.file_count, 5);
        let root = tree.node(0).unwrap();
        assert_eq!(root.kind, NodeKind::Dir { first: 1, count: 3, subdirs: 2 });
        let a = tree.find_child(root, b"a").unwrap();
        assert!(tree.find_child(tree.node(a).unwrap(), b"y").is_some());
        assert!(tree.find_child(root, b"missing").is_none());
        assert!(tree.find_child(tree.node(tree.find_child(root, b"dir").unwrap()).unwrap(), b"inner").is_none());
    }

    #[test]
    fn empty_overlay_has_only_the_root() {
        let tree = Tree::build(&[]).unwrap();
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.node(0).unwrap().kind, NodeKind::Dir { first: 1, count: 0, subdirs: 0 });
    }
}
