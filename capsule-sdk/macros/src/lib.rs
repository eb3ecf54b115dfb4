//! Attribute macros behind `capsule-sdk`.
//!
//! Each attribute turns one ordinary Rust function into the exports of an
//! Edge Runner capsule component. This crate owns only code generation and
//! the compile-time checks on the author's function; the runtime glue it
//! calls lives in `capsule_sdk::__private`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// Marks the entry point of a `test` capsule: a capsule that checks a system.
///
/// The function takes `&mut capsule_sdk::Context` and returns a
/// `capsule_sdk::Outcome` or a `Result<Outcome, E>` where `E: Display`.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "Test")
}

/// Marks the entry point of a `reproduce` capsule: a capsule that replays a
/// failure deterministically.
#[proc_macro_attribute]
pub fn reproduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "Reproduce")
}

/// Marks the entry point of a `remediate` capsule: a capsule that proposes a
/// change and never applies it.
#[proc_macro_attribute]
pub fn remediate(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "Remediate")
}

fn expand(attr: TokenStream, item: TokenStream, kind: &str) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(
            attr.span(),
            "capsule attributes take no arguments; capabilities belong in capsule.toml",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match check_signature(&func) {
        Ok(()) => generate(&func, kind).into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new(
            token.span(),
            "a capsule entry point cannot be `async`; write a plain `fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a capsule entry point cannot be generic",
        ));
    }
    if let Some(token) = &sig.unsafety {
        return Err(syn::Error::new(
            token.span(),
            "a capsule entry point cannot be `unsafe`",
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            if sig.inputs.is_empty() {
                sig.ident.span()
            } else {
                sig.inputs.span()
            },
            "a capsule entry point takes exactly one argument: `cx: &mut capsule_sdk::Context`",
        ));
    }
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new(
            receiver.span(),
            "a capsule entry point is a free function, not a method",
        ));
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new(
            sig.ident.span(),
            "a capsule entry point must return `capsule_sdk::Outcome` or `Result<Outcome, E>`",
        ));
    }
    Ok(())
}

fn generate(func: &ItemFn, kind: &str) -> proc_macro2::TokenStream {
    let name = &func.sig.ident;
    let kind = syn::Ident::new(kind, Span::call_site());
    quote! {
        #func

        const _: () = {
            struct EdgeRunnerCapsule;

            impl ::capsule_sdk::__private::Guest for EdgeRunnerCapsule {
                fn kind() -> ::capsule_sdk::__private::WitKind {
                    ::capsule_sdk::__private::WitKind::#kind
                }

                fn run(input: ::std::vec::Vec<u8>) -> ::capsule_sdk::__private::WitOutcome {
                    ::capsule_sdk::__private::run_entry(
                        ::capsule_sdk::Kind::#kind,
                        input,
                        #name,
                    )
                }
            }

            ::capsule_sdk::__private::export_capsule!(EdgeRunnerCapsule);
        };
    }
}
