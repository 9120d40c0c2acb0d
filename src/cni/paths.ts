/** Where CNI runtimes look by default: Debian's containernetworking-plugins, and Kubernetes' directory. */
export const CNI_CONF_DIRS = ['/etc/cni/net.d'];
export const CNI_PLUGIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];
