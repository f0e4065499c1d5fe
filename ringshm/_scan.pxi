# Whether a Queue item can be pickled without a buffer_callback: the test
# Queue.put runs on every object before pickling it.  Included into
# _ring.pyx (it needs no ring, but the core is the one compiled unit).
#
# Pickling with a buffer_callback costs a list, a bound method and the
# callback machinery (about 1,100 instructions for a 3-tuple, docs/
# PERFORMANCE.md), which only an object holding a buffer can repay.  This
# walks the object in C on borrowed references, running no Python code
# (no __eq__, no __hash__, the GIL held throughout, so no container changes
# under it), and answers True only when every part is an exact builtin
# scalar, or an exact tuple, list or dict of them.

cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        pass
    ctypedef struct PyObject:
        pass
    PyTypeObject PyLong_Type, PyUnicode_Type, PyFloat_Type, PyBool_Type, PyBytes_Type
    PyTypeObject PyComplex_Type, PyTuple_Type, PyList_Type, PyDict_Type
    PyObject *Py_None
    PyTypeObject *Py_TYPE(PyObject *obj)
    Py_ssize_t PyTuple_GET_SIZE(PyObject *obj)
    PyObject *PyTuple_GET_ITEM(PyObject *obj, Py_ssize_t i)
    Py_ssize_t PyList_GET_SIZE(PyObject *obj)
    PyObject *PyList_GET_ITEM(PyObject *obj, Py_ssize_t i)
    Py_ssize_t PyDict_Size(PyObject *obj)
    int PyDict_Next(PyObject *obj, Py_ssize_t *pos, PyObject **key, PyObject **value)

# A larger or deeper object may hold anything: it takes the callback, whose
# cost is then small beside its pickle.
cdef Py_ssize_t SCAN_BUDGET = 64
cdef int SCAN_DEPTH = 4


cdef bint _scan(PyObject *obj, Py_ssize_t *budget, int depth) noexcept:
    # Exact types only: a subclass may reduce to a buffer.
    cdef PyTypeObject *cls = Py_TYPE(obj)
    cdef Py_ssize_t pos = 0, i, n
    cdef PyObject *key
    cdef PyObject *value
    if (cls == &PyLong_Type or cls == &PyUnicode_Type or cls == &PyFloat_Type
            or cls == &PyBool_Type or cls == &PyBytes_Type or obj == Py_None
            or cls == &PyComplex_Type):
        return True
    if depth == 0:
        return False
    if cls == &PyTuple_Type:
        n = PyTuple_GET_SIZE(obj)
        budget[0] -= n
        if budget[0] < 0:
            return False
        for i in range(n):
            if not _scan(PyTuple_GET_ITEM(obj, i), budget, depth - 1):
                return False
        return True
    if cls == &PyList_Type:
        n = PyList_GET_SIZE(obj)
        budget[0] -= n
        if budget[0] < 0:
            return False
        for i in range(n):
            if not _scan(PyList_GET_ITEM(obj, i), budget, depth - 1):
                return False
        return True
    if cls == &PyDict_Type:
        budget[0] -= 2 * PyDict_Size(obj)
        if budget[0] < 0:
            return False
        while PyDict_Next(obj, &pos, &key, &value):
            if not (_scan(key, budget, depth - 1) and _scan(value, budget, depth - 1)):
                return False
        return True
    return False


def holds_no_buffer(obj):
    """True when pickling `obj` cannot meet an out-of-band buffer: it is an
    exact int, str, float, bool, bytes, complex or None, or an exact tuple,
    list or dict of those (at most 64 parts, containers 4 deep).  False means
    only "maybe": pickle it with a buffer_callback."""
    cdef Py_ssize_t budget = SCAN_BUDGET
    return _scan(<PyObject *>obj, &budget, SCAN_DEPTH)
