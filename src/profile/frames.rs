//! The frame table: each distinct frame once, with an index for interning.

use std::collections::HashMap;

use super::{Frame, FrameId};

/// Interned frames.
#[derive(Debug, Clone, Default)]
pub struct FrameTable {
    frames: Vec<Frame>,
    index: HashMap<Frame, FrameId>,
}

impl FrameTable {
    /// The id of `frame`, adding it when new.
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.index.get(&frame) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(frame);
        self.index.insert(frame, id);
        id
    }

    /// The frame with id `id`.
    pub fn get(&self, id: FrameId) -> Option<&Frame> {
        self.frames.get(id as usize)
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when there are no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// All frames in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Frame> {
        self.frames.iter()
    }
}
