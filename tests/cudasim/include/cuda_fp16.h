// Host stand-in for CUDA's half type: the same 16-bit IEEE layout as NumPy's
// float16, converted through the compiler's _Float16.
#pragma once
struct __half {
    _Float16 v;
    __half() = default;
    explicit __half(float f) : v((_Float16)f) {}
    operator float() const { return (float)v; }
};
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
