//! Per-flow-slot application state that grows with the slots really used.
//! A `Vec` of `max_flows` entries written at start makes every page of it
//! resident (a proxied connection's state is hundreds of bytes), whatever
//! the load; this one reserves the room (address space only) and fills it
//! as the stack builds its slots (in order, on first use): an unbuilt slot
//! reads as the empty value, and writing to it builds it. No reallocation
//! ever: growth stays within the reserved capacity.

use std::ops::{Index, IndexMut};

pub struct SlotVec<T> {
    items: Vec<T>,
    slots: usize,
    /// What an unbuilt slot reads as.
    empty: T,
    make: fn() -> T,
}

impl<T> SlotVec<T> {
    /// Room for `slots` entries, each `make()` until set.
    pub fn new(slots: usize, make: fn() -> T) -> SlotVec<T> {
        SlotVec {
            items: Vec::with_capacity(slots),
            slots,
            empty: make(),
            make,
        }
    }

    /// Entries built so far (every later one is the empty value).
    pub fn built(&self) -> usize {
        self.items.len()
    }

    /// Entries it has room for (`max_flows`).
    pub fn slots(&self) -> usize {
        self.slots
    }
}

impl<T> Index<usize> for SlotVec<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        assert!(i < self.slots, "slot {i} of {}", self.slots);
        self.items.get(i).unwrap_or(&self.empty)
    }
}

impl<T> IndexMut<usize> for SlotVec<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.slots, "slot {i} of {}", self.slots);
        if i >= self.items.len() {
            // Within the capacity reserved in `new`: no allocation.
            self.items.resize_with(i + 1, self.make);
        }
        &mut self.items[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbuilt_slots_read_empty_and_build_in_place() {
        let mut v: SlotVec<Option<u64>> = SlotVec::new(1000, || None);
        let cap = v.items.capacity();
        assert_eq!((v.built(), v.slots(), v[999]), (0, 1000, None));
        v[2] = Some(7);
        assert_eq!((v.built(), v[0], v[2], v[3]), (3, None, Some(7), None));
        v[999] = Some(1);
        assert_eq!((v.built(), v[999]), (1000, Some(1)));
        assert_eq!(v.items.capacity(), cap, "never reallocated");
    }

    #[test]
    #[should_panic(expected = "slot 10 of 10")]
    fn a_slot_past_the_end_is_a_bug() {
        let v: SlotVec<u8> = SlotVec::new(10, || 0);
        let _ = v[10];
    }
}
