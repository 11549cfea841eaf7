//! TFLite int8 requantization arithmetic. (In progress.)
