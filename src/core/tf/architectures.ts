/** The built-in templates' names (tf-free: the HTTP layer validates against them without loading TensorFlow.js). */
export const ARCHITECTURES = ['lenet-300-100', 'cnn-bn', 'resnet-small'] as const;
export type Architecture = (typeof ARCHITECTURES)[number];
