//! Resolving a whole subtree at once.
//!
//! juniper's async executor resolves every field of every object as its own
//! boxed future, even when the value is already in memory. A page of 50
//! users is ~1,000 of them. [`Eager`] wraps a value whose subtree has no
//! async field (the read-model rows, loaded before it is returned) and
//! resolves it with the synchronous executor: same schema, same result,
//! a fraction of the allocations.

use juniper::macros::reflect::{BaseSubTypes, BaseType, Type, Types, WrappedType, WrappedValue};
use juniper::meta::MetaType;
use juniper::{
    Arguments, BoxFuture, ExecutionResult, Executor, GraphQLType, GraphQLValue, GraphQLValueAsync,
    Registry, ScalarValue, Selection,
};

/// A value resolved synchronously (see the module docs). The type is the
/// wrapped one's in the schema.
#[derive(Debug, Clone)]
pub struct Eager<T>(pub T);

impl<S: ScalarValue, T: GraphQLType<S>> GraphQLType<S> for Eager<T> {
    fn name(info: &Self::TypeInfo) -> Option<juniper::ArcStr> {
        T::name(info)
    }

    fn meta(info: &Self::TypeInfo, registry: &mut Registry<S>) -> MetaType<S> {
        T::meta(info, registry)
    }
}

impl<S: ScalarValue, T: GraphQLValue<S>> GraphQLValue<S> for Eager<T> {
    type Context = T::Context;
    type TypeInfo = T::TypeInfo;

    fn type_name(&self, info: &Self::TypeInfo) -> Option<juniper::ArcStr> {
        self.0.type_name(info)
    }

    fn resolve_field(
        &self,
        info: &Self::TypeInfo,
        field_name: &str,
        arguments: &Arguments<S>,
        executor: &Executor<Self::Context, S>,
    ) -> ExecutionResult<S> {
        self.0.resolve_field(info, field_name, arguments, executor)
    }

    fn concrete_type_name(&self, context: &Self::Context, info: &Self::TypeInfo) -> String {
        self.0.concrete_type_name(context, info)
    }

    fn resolve(
        &self,
        info: &Self::TypeInfo,
        selection_set: Option<&[Selection<S>]>,
        executor: &Executor<Self::Context, S>,
    ) -> ExecutionResult<S> {
        self.0.resolve(info, selection_set, executor)
    }
}

impl<S, T> GraphQLValueAsync<S> for Eager<T>
where
    S: ScalarValue + Send + Sync,
    T: GraphQLValue<S> + Sync,
    T::TypeInfo: Sync,
    T::Context: Sync,
{
    fn resolve_async<'a>(
        &'a self,
        info: &'a Self::TypeInfo,
        selection_set: Option<&'a [Selection<S>]>,
        executor: &'a Executor<Self::Context, S>,
    ) -> BoxFuture<'a, ExecutionResult<S>> {
        Box::pin(std::future::ready(self.0.resolve(
            info,
            selection_set,
            executor,
        )))
    }
}

impl<S: ScalarValue, T: juniper::marker::IsOutputType<S>> juniper::marker::IsOutputType<S>
    for Eager<T>
{
}

impl<S, T: BaseType<S>> BaseType<S> for Eager<T> {
    const NAME: Type = T::NAME;
}

impl<S, T: BaseSubTypes<S>> BaseSubTypes<S> for Eager<T> {
    const NAMES: Types = T::NAMES;
}

impl<S, T: WrappedType<S>> WrappedType<S> for Eager<T> {
    const VALUE: WrappedValue = T::VALUE;
}
