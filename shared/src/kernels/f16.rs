//! f16 kernels. (In progress.)
