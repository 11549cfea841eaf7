//! int8 kernels. (In progress.)
