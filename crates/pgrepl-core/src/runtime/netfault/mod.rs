//! Network faults inside a node's own network namespace, for every runtime that gives a node
//! one (netns: a namespace per node; docker: the container's): tagged kernel rules for
//! partitions and loss, and a userspace delayer (this kernel has no netem). The faults in
//! force are always read back from the kernel and the process table, never from a file.

pub mod delayer;
pub mod rules;
pub mod tools;
