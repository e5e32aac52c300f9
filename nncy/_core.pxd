cimport numpy as cnp

cdef class Context:
    cdef list _backend
    cdef public str array_class
    cdef public str device_id
    cdef tuple _key
    cdef object _dtype


cdef class Operand:
    pass


cdef class NdArray(Operand):
    cdef object _arr
    cdef tuple _shape
    cdef object _dtype
    cdef object _dev         # device copy (set by a GPU backend), or None
    cdef bint _on_dev        # the device copy is newer than _arr
    cdef object __weakref__
    cdef object get(self)
    cdef object get_empty(self)
    cdef _pull(self)
    cdef object device(self)
    cdef object device_empty(self)
    cdef drop(self)
    cdef bint has_data(self)


cdef class Variable(Operand):
    cdef NdArray _data
    cdef NdArray _grad
    cdef Function _parent
    cdef bint _need_grad
    cdef public bint persistent
    cdef public object name
    cdef object _recompute
    cdef int _consumers
    cdef object __weakref__


cdef class Function:
    cdef readonly object spec
    cdef public object impl
    cdef readonly dict args
    cdef list _inputs
    cdef list _outputs
    cdef list _out_data
    cdef object _name
    cdef Context _ctx
    cdef object __weakref__
    cdef list outs(self)


cdef class Impl:
    cdef public object spec
    cdef public dict args
    cdef public Context ctx
