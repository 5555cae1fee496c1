# Declarations of _alloc.h for the Cython modules: bookkeeping allocation
# (PyMem_Raw*) with the tests' failure injector.

cdef extern from "_alloc.h":
    void* _malloc "mw_malloc"(size_t n) noexcept nogil
    void* _calloc "mw_calloc"(size_t n, size_t size) noexcept nogil
    void* _realloc "mw_realloc"(void* p, size_t n) noexcept nogil
    void _free "mw_free"(void* p) noexcept nogil
    void* _malloc_array "mw_malloc_array"(size_t n, size_t size) noexcept nogil
    void* _realloc_array "mw_realloc_array"(void* p, size_t n, size_t size) noexcept nogil
    void mw_fail_allocation_after(Py_ssize_t n) noexcept nogil
    int mw_gc_hold() noexcept
    void mw_gc_release(int was) noexcept
    int mw_gc_after_fork_child() noexcept
