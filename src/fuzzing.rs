//! Harnesses shared by the fuzz targets and by the tests that replay their
//! corpora on stable.
