/** Batch-norm running statistics: the only tensors a recalibration may change (PyTorch and Keras names). */
export const BN_STATISTIC = /(^|[./_])(running_mean|running_var|num_batches_tracked|moving_mean|moving_variance)(:\d+)?$/;
