//! The allocation-free runner and arena planner. (In progress.)
