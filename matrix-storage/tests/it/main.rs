//! The one integration-test binary of matrix-storage: the conformance suite on every backend.

mod memory {
    matrix_storage::storage_conformance!(async {
        std::sync::Arc::new(matrix_storage::memory::MemoryStore::new())
            as std::sync::Arc<dyn matrix_storage::Storage>
    });
}
