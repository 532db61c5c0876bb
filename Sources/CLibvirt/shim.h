// libvirt's C API as livecopy's libvirt backend uses it: the domain and block job calls,
// the event loop, and libvirt-qemu's monitor pass-through (Debian: libvirt-dev).
#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
