//! The stack table: a prefix tree. A stack is its leaf node; each node
//! holds one frame and its parent (the caller), so stacks sharing callers
//! share nodes, and a parent always has a smaller id than its children.

use std::collections::HashMap;

use super::FrameId;

/// Index of a node in a [`StackTable`]; a stack is identified by its leaf node.
pub type StackId = u32;

/// One node: a frame and the stack it was called from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StackNode {
    /// The caller's node; `None` at the root.
    pub parent: Option<StackId>,
    /// The frame.
    pub frame: FrameId,
}

/// Interned stacks.
#[derive(Debug, Clone, Default)]
pub struct StackTable {
    nodes: Vec<StackNode>,
    index: HashMap<StackNode, StackId>,
}

impl StackTable {
    /// The node for `frame` called from `parent`, adding it when new.
    pub fn intern(&mut self, parent: Option<StackId>, frame: FrameId) -> StackId {
        let node = StackNode { parent, frame };
        if let Some(&id) = self.index.get(&node) {
            return id;
        }
        let id = self.nodes.len() as StackId;
        self.nodes.push(node);
        self.index.insert(node, id);
        id
    }

    /// The node with id `id`.
    pub fn get(&self, id: StackId) -> Option<&StackNode> {
        self.nodes.get(id as usize)
    }

    /// All nodes in id order (parents before children).
    pub fn nodes(&self) -> &[StackNode] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes from `leaf` up to the root (leaf first). Ids only ever
    /// point to smaller ids, so the walk ends.
    pub fn path(&self, leaf: Option<StackId>) -> impl Iterator<Item = &StackNode> + '_ {
        let mut cur = leaf.and_then(|id| self.get(id));
        std::iter::from_fn(move || {
            let n = cur?;
            cur = n.parent.and_then(|p| self.get(p));
            Some(n)
        })
    }
}

/// A value per stack (and one for "no stack"), each computed once: for
/// analyses that decide something per distinct stack, indexing by stack id
/// instead of hashing once per sample.
#[derive(Debug, Clone)]
pub struct StackMemo<T> {
    /// Index 0: no stack; `id + 1`: stack `id`.
    slots: Vec<Option<T>>,
}

impl<T> StackMemo<T> {
    /// Room for every stack of `stacks`.
    pub fn new(stacks: &StackTable) -> StackMemo<T> {
        StackMemo {
            slots: std::iter::repeat_with(|| None)
                .take(stacks.len() + 1)
                .collect(),
        }
    }

    /// The value of `stack`, computed by `f` the first time.
    pub fn get_or_insert_with(&mut self, stack: Option<StackId>, f: impl FnOnce() -> T) -> &mut T {
        let i = stack.map_or(0, |s| s as usize + 1);
        if i >= self.slots.len() {
            // Not a stack of the table it was made for: room is made.
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i].get_or_insert_with(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_share_nodes() {
        let mut t = StackTable::default();
        let a = t.intern(None, 0);
        let ab = t.intern(Some(a), 1);
        let ac = t.intern(Some(a), 2);
        assert_eq!(t.intern(Some(a), 1), ab);
        assert_eq!(t.len(), 3);
        let frames: Vec<u32> = t.path(Some(ac)).map(|n| n.frame).collect();
        assert_eq!(frames, vec![2, 0]);
        assert_eq!(t.path(None).count(), 0);

        let mut m = StackMemo::new(&t);
        let mut calls = 0;
        for stack in [Some(ab), None, Some(ab), Some(99), None] {
            m.get_or_insert_with(stack, || {
                calls += 1;
                stack
            });
        }
        assert_eq!(calls, 3, "once per distinct stack");
        assert_eq!(*m.get_or_insert_with(Some(99), || None), Some(99));
    }
}
