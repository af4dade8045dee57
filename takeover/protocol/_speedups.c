/* Optional C speedups for takeover's sans-I/O core.
 *
 * apply_mask(data, mask) -> bytes: RFC 6455 section 5.3 masking, XOR of the
 * payload with the repeating 4-byte masking key, eight bytes at a time.
 * takeover/protocol/mask.py falls back to pure Python when this is absent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    PyObject *result;
    const unsigned char *in;
    unsigned char *out;
    Py_ssize_t size, i = 0;
    uint32_t mask32;
    uint64_t mask64;

    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        return NULL;
    }
    size = data.len;
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        return NULL;
    }
    in = (const unsigned char *)data.buf;
    out = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(&mask32, mask.buf, 4);
    mask64 = ((uint64_t)mask32 << 32) | mask32;

    Py_BEGIN_ALLOW_THREADS
    for (; i + 8 <= size; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= mask64;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < size; i++) {
        out[i] = in[i] ^ ((const unsigned char *)mask.buf)[i & 3];
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS,
     "apply_mask(data, mask) -> bytes\n\nXOR data with the repeating 4-byte mask (RFC 6455 section 5.3)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "takeover.protocol._speedups",
    "C speedups for takeover's WebSocket core.", -1, speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
