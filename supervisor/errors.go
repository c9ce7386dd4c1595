package supervisor

import "errors"

// ErrInvalidWorker: AddWorker was given an empty id or a nil factory;
// nothing was added.
var ErrInvalidWorker = errors.New("snakepit: AddWorker needs a non-empty worker id and a non-nil worker.Factory; nothing was added")
